"""Several processes through accelerate (gloo on the CPU): `aim compress-demos` and `aim icl-eval` under
`accelerate launch --multi_gpu --num_processes 2` (on a machine without GPUs the processes run on the
CPU; accelerate's `--cpu` starts several only through MPI) give the bank and the samples one process
gives, and a run whose process was killed, started again, ends the same with nothing done twice."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from aim.bank import DemoBank

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("latency_s", "retrieval_s", "peak_memory_bytes")


def env():
    clean = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}
    return dict(clean, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=ROOT)


def launch(n: int, *args, wait=True):
    """``accelerate launch --multi_gpu --num_processes n -m aim.cli ARGS`` (one plain process for n = 1)."""
    if n == 1:
        cmd = [sys.executable, "-m", "aim.cli", *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu", "--main_process_port",
               str(29500 + os.getpid() % 1000), "-m", "aim.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT,
                                start_new_session=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    rows = []
    for i in range(14):
        Image.new("RGB", (12, 12), (17 * i % 256, 40 + 9 * i, 200 - 11 * i)).save(folder / f"{i}.png")
        rows.append({"question_id": f"q{i}", "image": f"{i}.png", "question": f"what colour is {i}?",
                     "answers": [["red", "blue", "green"][i % 3]]})
    path = folder / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def bank_contents(folder: str) -> dict:
    bank = DemoBank.open(folder)
    keys, ids = bank.keys("image")
    return {i: (bank.fused(i), keys[n], bank.meta(i)["question"]) for n, i in enumerate(ids)}


def test_two_processes_build_the_bank_one_process_builds(tiny_hf_folders, pool, tmp_path):
    common = ["compress-demos", "--backbone", tiny_hf_folders("llava"), "--fuser", "identity", "--dataset", pool,
              "--batch-size", "2", "--shard-size", "2"]
    launch(1, *common, "--out", str(tmp_path / "one"))
    two = launch(2, *common, "--out", str(tmp_path / "two"))
    assert two.stdout.count("| ") >= 1  # the main process prints the table once
    one, other = bank_contents(str(tmp_path / "one")), bank_contents(str(tmp_path / "two"))
    assert sorted(one) == sorted(other) and len(one) == 14
    for i in one:
        assert torch.equal(one[i][0], other[i][0]) and torch.equal(one[i][1], other[i][1]), i
        assert one[i][2] == other[i][2]
    files = sorted(os.listdir(tmp_path / "two"))
    assert not [f for f in files if f.startswith("bank.rank-")]  # merged into bank.json
    assert any(f.startswith("shard-r1-") for f in files) and any(f.startswith("shard-r0-") for f in files)


def samples_of(folder) -> list[dict]:
    (run,) = [d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))]
    with open(os.path.join(folder, run, "samples.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def results_of(folder) -> dict:
    (run,) = [d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))]
    with open(os.path.join(folder, run, "results.json")) as f:
        doc = json.load(f)
    cells = {}
    for dataset, methods in doc["results"].items():
        for method, shots in methods.items():
            for k, cell in shots.items():
                cells[(dataset, method, k)] = (cell.get("accuracy"), cell.get("prompt_tokens"), cell.get("n"))
    return cells


def icl_eval_args(folder, pool, out):
    return ["icl-eval", "--backbone", folder, "--fuser", "identity", "--dataset", pool, "--pool", pool,
            "--methods", "zero,raw,text,fused", "--shots", "0,2,3", "--seeds", "0,1", "--select", "random",
            "--batch-size", "2", "--max-new-tokens", "3", "--output", str(out), "--quiet"]


def test_two_processes_write_the_samples_and_results_one_process_writes(tiny_hf_folders, pool, tmp_path):
    args = icl_eval_args(tiny_hf_folders("llava"), pool, tmp_path / "one")
    launch(1, *args)
    two = launch(2, *icl_eval_args(tiny_hf_folders("llava"), pool, tmp_path / "two"))
    assert two.stdout.count("| zero |") <= 1 and "samples in" in two.stdout  # printed once, by the main process
    one, other = samples_of(tmp_path / "one"), samples_of(tmp_path / "two")
    assert len(one) == 14 * (1 + 3 * 2 * 2) and one == other  # same samples, same (canonical) order
    assert results_of(tmp_path / "one") == results_of(tmp_path / "two")
    (run,) = os.listdir(tmp_path / "two")
    assert not [f for f in os.listdir(tmp_path / "two" / run) if f.startswith("samples.rank-")]


def pid_of_rank(marker: str, rank: int):
    """The pid of the process launched with ``RANK=rank`` whose command line holds ``marker``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if marker in cmd and "aim.cli" in cmd and f"RANK={rank}" in environ:
            return int(pid)
    return None


def test_a_killed_process_loses_nothing_and_nothing_is_done_twice(tiny_hf_folders, pool, tmp_path):
    """SIGKILL one of two processes while it answers; the launcher stops the other; the rerun (two
    processes again) ends with exactly the samples of an uninterrupted one-process run."""
    out = tmp_path / "killed"
    args = icl_eval_args(tiny_hf_folders("llava"), pool, out)
    args[args.index("--batch-size") + 1] = "1"
    run = launch(2, *args, wait=False)
    victim, deadline = None, time.time() + 300
    while time.time() < deadline and run.poll() is None:
        files = [os.path.join(r, f) for r, _, fs in os.walk(out) for f in fs if f == "samples.rank-1.jsonl"]
        if files and sum(1 for _ in open(files[0])) >= 3:
            victim = pid_of_rank(str(out), 1)
            if victim:
                os.kill(victim, signal.SIGKILL)
                break
        time.sleep(0.02)
    run.communicate(timeout=300)
    assert victim is not None and run.returncode != 0, "the run ended before a process could be killed"
    (folder,) = os.listdir(out)
    assert not os.path.exists(out / folder / "results.json")  # the run did not finish
    launch(2, *args)
    launch(1, *icl_eval_args(tiny_hf_folders("llava"), pool, tmp_path / "one"))
    resumed = samples_of(out)
    keys = [(s["method"], s["shots"], s["seed"], s["id"]) for s in resumed]
    assert len(keys) == len(set(keys))  # nothing answered twice
    assert resumed == samples_of(tmp_path / "one")


def test_a_failed_process_leaves_a_bank_the_rerun_completes(tiny_hf_folders, pool, tmp_path):
    """compress-demos with two processes: one stops on a broken image after committing shards of its
    own; the rerun (image repaired) merges them, does only what is missing, and gives the bank one
    process gives."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [json.loads(line) for line in open(pool)]
    for r in rows:
        Image.open(os.path.join(os.path.dirname(pool), r["image"])).save(folder / r["image"])
    good = (folder / "7.png").read_bytes()
    (folder / "7.png").write_bytes(b"not a png")  # shard 3 of size 2: the second process's
    (folder / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["compress-demos", "--backbone", tiny_hf_folders("llava"), "--fuser", "identity", "--dataset",
              str(folder / "pool.jsonl"), "--batch-size", "2", "--shard-size", "2"]
    cmd = launch(2, *common, "--out", str(tmp_path / "two"), wait=False)
    _, err = cmd.communicate(timeout=600)
    assert cmd.returncode != 0 and "7.png" in err
    left = os.listdir(tmp_path / "two")
    assert "bank.rank-1.json" in left  # its first shard was committed to its own manifest
    (folder / "7.png").write_bytes(good)
    launch(2, *common, "--out", str(tmp_path / "two"))
    launch(1, *common, "--out", str(tmp_path / "one"))
    one, two = bank_contents(str(tmp_path / "one")), bank_contents(str(tmp_path / "two"))
    assert sorted(one) == sorted(two) and len(DemoBank.open(str(tmp_path / "two"))) == 14
    for i in one:
        assert torch.equal(one[i][0], two[i][0]) and torch.equal(one[i][1], two[i][1]), i
