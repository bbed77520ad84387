"""aim compress-demos: a run killed with SIGKILL part way and started again holds every
demonstration exactly once, with the fused tokens of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import aim
from aim.bank import BankError, DemoBank
from aim.compress import compress_demos
from aim.data.spec import load_records
from aim.fusion import Fuser, load_fuser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pocket():
    torch.set_num_threads(1)
    return aim.load_backbone("pocket")


@pytest.fixture(scope="module")
def fuser_dir(pocket, tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("fuser")
    Fuser.for_backbone(pocket, layer=15, init="default").save_pretrained(str(folder))
    return str(folder)


def command(fuser_dir, out):
    return [sys.executable, os.path.join(ROOT, "cli.py"), "compress-demos", "--fuser", fuser_dir,
            "--dataset", "easy-vqa:train", "--limit", "24", "--batch-size", "4", "--shard-size", "4",
            "--keys", "image", "--out", str(out)]


def committed(out):
    try:
        return json.load(open(os.path.join(out, "bank.json")))["count"]
    except (OSError, ValueError):
        return 0


def test_sigkill_then_resume_equals_uninterrupted(fuser_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(command(fuser_dir, straight), check=True, capture_output=True, env=env, timeout=300)

    proc = subprocess.Popen(command(fuser_dir, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    while committed(killed) < 8 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = committed(killed)
    assert 8 <= done_before < 24, "the run should be killed part way"
    out = subprocess.run(command(fuser_dir, killed), check=True, capture_output=True, text=True, env=env, timeout=300)
    assert f"24 ({24 - done_before})" in out.stdout  # the summary: all demos, only the missing ones added

    a, b = DemoBank.open(str(straight)), DemoBank.open(str(killed))
    assert b.ids() == a.ids() and len(set(b.ids())) == 24
    for i in a.ids():
        assert torch.allclose(a.fused(i), b.fused(i), atol=1e-5), i
    assert torch.allclose(a.keys("image")[0], b.keys("image")[0], atol=1e-5)


def test_bank_of_another_fuser_or_backbone_is_refused(pocket, fuser_dir, tmp_path):
    records = load_records("easy-vqa:train", 4)
    summary = compress_demos(pocket, load_fuser(fuser_dir, pocket), records, str(tmp_path), batch_size=4,
                             progress=False)
    assert summary["demos"] == 4 and summary["fused_tokens_per_demo"] > 0
    assert summary["raw_tokens_per_demo"] == pytest.approx(summary["fused_tokens_per_demo"] + pocket.image_tokens)
    with pytest.raises(BankError, match="built with fuser"):
        compress_demos(pocket, load_fuser("identity", pocket, layer=15), records, str(tmp_path), progress=False)
    with pytest.raises(BankError, match="made from layer 15 states; this fuser reads layer -1"):
        DemoBank.open(str(tmp_path), backbone=pocket.fingerprint(layer=-1))


def test_bad_image_stops_with_a_clear_error_and_keeps_committed_shards(pocket, fuser_dir, tmp_path):
    records = load_records("easy-vqa:train", 8)
    records[6].image = str(tmp_path / "gone.png")
    with pytest.raises(aim.ImageError, match="gone.png"):
        compress_demos(pocket, load_fuser(fuser_dir, pocket), records, str(tmp_path / "bank"), batch_size=2,
                       shard_size=4, progress=False)
    assert len(DemoBank.open(str(tmp_path / "bank"))) == 4
