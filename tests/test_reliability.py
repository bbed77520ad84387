"""The reliability catalogue: bad inputs and faults, each with the behaviour it must keep.

Every case asserts what a user sees (the exit code and a one-line error that names the input and the
fix, or the right result) and, where something was already written, that nothing of it was lost or
changed (SHA-256 of every file before and after). docs/reliability.md lists the guarantees these
cases hold. CLI cases that fail before a model loads run as real subprocesses; the others use the
Python API with tiny random-weight models and synthetic banks, so the catalogue runs in about a minute.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import aim
from aim.bank import DemoBank
from aim.errors import AimError, BankError, ConfigError, DatasetError, ImageError, LockedError
from aim.fusion import Fuser, FusionConfig
from aim.images import load_image
from aim.locking import LOCK_NAME, FolderLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKBONE = {"family": "toy", "model": "toy", "revision": "r", "dtype": "float32", "hidden_size": 8, "layer": -1}
FUSER = {"kind": "linear", "layer": -1, "digest": "f00"}


# ---------------------------------------------------------------------- helpers
def tree(folder) -> dict:
    """Every file under ``folder`` with its SHA-256 (what "nothing lost or changed" compares)."""
    out = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def aim_cli(*args, env=None, timeout=300):
    clean = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS",
                                                              "AIM_ALLOW_OUTSIDE_PATHS")}
    return subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *args], capture_output=True, text=True,
                          env=dict(clean, HF_HUB_OFFLINE="1", **(env or {})), timeout=timeout)


def one_line(proc, *words) -> str:
    """The run failed with exit 2 and one ``error: ...`` line holding every one of ``words``."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def png(path, size=(8, 8), color=(200, 30, 30)):
    Image.new("RGB", size, color).save(path)
    return str(path)


def jsonl(folder, rows, name="data.jsonl", raw: bytes = None):
    path = folder / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def row(i, image="0.png", **kw):
    return dict({"question_id": i, "image": image, "question": "what colour?", "answers": ["red"]}, **kw)


def shard(start, n, width=8, value=None):
    g = torch.Generator().manual_seed(start)
    ids = [f"d{start + i}" for i in range(n)]
    fused = [torch.randn(4, width, generator=g) if value is None else torch.full((4, width), value) for _ in ids]
    metas = [{"question": f"q{i}", "answers": ["a"]} for i in ids]
    return ids, fused, metas, {"image": torch.randn(n, 5, generator=g)}


@pytest.fixture
def data(tmp_path):
    png(tmp_path / "0.png")
    return tmp_path


# ---------------------------------------------------------------------- datasets (before any model loads)
DATASET_CASES = {
    "a line that is not JSON": ([row(0), '{"question_id": 1, "image"'], None, ["data.jsonl", "line 2", "not JSON"]),
    "bytes that are not UTF-8": (None, b'{"question_id": 0, "question": "\xff\xfe"}\n', ["data.jsonl", "not UTF-8"]),
    "a record without a question": ([{"question_id": 0, "image": "0.png", "answers": ["a"]}], None,
                                    ["record 0", "no 'question' field"]),
    "an empty question": ([row(0, question="")], None, ["record 0", "'question' is ''", "non-empty"]),
    "a missing image file": ([row(0, image="nope.png")], None, ["nope.png", "not found"]),
    "an image path outside the dataset's folder": ([row(0, image="../elsewhere.png")], None,
                                                    ["../elsewhere.png", "outside", "--allow-outside-paths"]),
    "an absolute image path": ([row(0, image="/etc/hostname")], None, ["/etc/hostname", "outside"]),
    "two records with one id": ([row(0), row(0)], None, ["share the id"]),
    "a line that is a list": (["[1, 2]"], None, ["not an object"]),
    "an empty file": ([], None, ["gives no records", "check the file"]),
}


@pytest.mark.parametrize("case", list(DATASET_CASES))
def test_dataset_faults_are_one_line_before_the_model_loads(data, case):
    rows, raw, words = DATASET_CASES[case]
    path = jsonl(data, rows or [], raw=raw)
    before = tree(data)
    start = time.perf_counter()
    one_line(aim_cli("answer", "--dataset", path, "--limit", "2"), *words)
    assert time.perf_counter() - start < 60  # no backbone was loaded for it
    assert tree(data) == before


def test_outside_paths_are_read_when_allowed(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    png(tmp_path / "elsewhere.png")
    path = jsonl(tmp_path / "data", [row(0, image="../elsewhere.png")])
    with pytest.raises(ImageError, match="outside"):
        aim.load_records(path)
    monkeypatch.setenv("AIM_ALLOW_OUTSIDE_PATHS", "1")
    (rec,) = aim.load_records(path)
    assert rec.image == str(tmp_path / "elsewhere.png")


def test_vqa_json_that_is_not_json_or_not_utf8(tmp_path):
    (tmp_path / "questions.json").write_text('{"questions": [')
    with pytest.raises(DatasetError, match="questions.json: not JSON"):
        aim.load_records(str(tmp_path / "questions.json"))
    (tmp_path / "questions.json").write_bytes(b'{"questions": ["\xff"]}')
    with pytest.raises(DatasetError, match="not UTF-8"):
        aim.load_records(str(tmp_path / "questions.json"))


def test_documents_with_bytes_that_are_not_utf8(tmp_path):
    from aim.data.documents import load_documents

    (tmp_path / "docs.jsonl").write_bytes(b'{"images": ["a.png", null], "texts": [null, "\xff"]}\n')
    with pytest.raises(DatasetError, match="docs.jsonl: not UTF-8"):
        load_documents(str(tmp_path / "docs.jsonl"))


# ---------------------------------------------------------------------- images
def test_16_bit_grayscale_is_scaled_not_white(tmp_path):
    values = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode.startswith("I")
    rgb = np.asarray(load_image(str(tmp_path / "scan.png")))
    assert rgb.shape == (8, 8, 3) and rgb.min() == 0 and rgb.max() == 255
    assert abs(int(rgb[4, 0, 0]) - round(values[4, 0] / 257)) <= 1  # the 16-bit scale, not clipped at 255


def test_transparent_pixels_are_white_whatever_they_hide(tmp_path):
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    im.putpixel((0, 0), (0, 0, 255, 255))  # one opaque blue pixel
    im.save(tmp_path / "alpha.png")
    rgb = np.asarray(load_image(str(tmp_path / "alpha.png")))
    assert tuple(rgb[1, 1]) == (255, 255, 255) and tuple(rgb[0, 0]) == (0, 0, 255)
    half = Image.new("LA", (2, 2), (0, 128))  # black at half opacity: mid grey on white
    assert 120 <= np.asarray(load_image(half))[0, 0, 0] <= 135


@pytest.mark.parametrize("what", ["folder", "fifo", "device", "url", "corrupt"])
def test_what_is_not_an_image_file_is_named_so(tmp_path, what):
    target, words = {"folder": (str(tmp_path), ["is a folder"]),
                     "fifo": (str(tmp_path / "pipe"), ["not a regular file"]),
                     "device": ("/dev/zero", ["not a regular file"]),
                     "url": ("http://example.com/cat.png", ["URL", "local files only"]),
                     "corrupt": (str(tmp_path / "broken.png"), ["broken.png", "corrupt"])}[what]
    if what == "fifo":
        os.mkfifo(target)
    if what == "corrupt":
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ImageError) as err:
        load_image(target)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    png(tmp_path / "big.png", size=(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 pixels is "too many" now
    with pytest.raises(ImageError, match="big.png is too large to load safely"):
        load_image(str(tmp_path / "big.png"))


# ---------------------------------------------------------------------- checkpoints
def fuser_folder(tmp_path):
    fuser = Fuser(FusionConfig(hidden_size=8, kind="linear"))
    fuser.save_pretrained(str(tmp_path / "fuser"))
    return tmp_path / "fuser"


@pytest.mark.parametrize("damage", ["config not JSON", "weights not safetensors", "weights of another shape",
                                    "unknown field", "invalid value"])
def test_a_damaged_fuser_is_one_clear_error(tmp_path, damage):
    folder = fuser_folder(tmp_path)
    config = json.loads((folder / "fusion_config.json").read_text())
    if damage == "config not JSON":
        (folder / "fusion_config.json").write_text("{kind: linear")
        words = ["fusion_config.json is not valid JSON"]
    elif damage == "weights not safetensors":
        (folder / "fusion_model.safetensors").write_bytes(b"PK\x03\x04 a zip, say")
        words = ["fusion_model.safetensors is not a readable safetensors file"]
    elif damage == "weights of another shape":
        Fuser(FusionConfig(hidden_size=6, kind="linear")).save_pretrained(str(tmp_path / "other"))
        os.replace(tmp_path / "other" / "fusion_model.safetensors", folder / "fusion_model.safetensors")
        words = ["does not fit fusion_config.json", "different checkpoints"]
    elif damage == "unknown field":
        (folder / "fusion_config.json").write_text(json.dumps(dict(config, attention_heads=4)))
        words = ["unknown fields attention_heads", "upgrade aim"]
    else:
        (folder / "fusion_config.json").write_text(json.dumps(dict(config, kind="conv")))
        words = ["fusion_config.json is invalid", "kind must be one of"]
    with pytest.raises(AimError) as err:
        Fuser.from_pretrained(str(folder))
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_a_connector_config_that_is_not_json(tmp_path):
    from aim.backbones.pocket.connector import Connector, ConnectorConfig

    Connector(ConnectorConfig()).save_pretrained(str(tmp_path))
    (tmp_path / "connector_config.json").write_text("[")
    with pytest.raises(aim.BackboneError, match="connector_config.json is not valid JSON"):
        Connector.from_pretrained(str(tmp_path))


# ---------------------------------------------------------------------- banks
def bank_with_two_shards(folder):
    bank = DemoBank.create(str(folder), BACKBONE, FUSER, 8)
    bank.append(*shard(0, 3))
    bank.append(*shard(3, 3))
    return bank


def test_two_shards_swapped_are_refused(tmp_path):
    bank_with_two_shards(tmp_path)
    a, b = tmp_path / "shard-00000.safetensors", tmp_path / "shard-00001.safetensors"
    assert a.stat().st_size == b.stat().st_size  # equal sizes: the old size check let this through
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b), b.write_bytes(data_a)
    bank = DemoBank.open(str(tmp_path))  # opening is cheap (sizes); the first read checks the content
    with pytest.raises(BankError, match="shard-00000.safetensors does not hold what the manifest recorded"):
        bank.fused("d0")
    with pytest.raises(BankError, match="SHA-256"):
        DemoBank.open(str(tmp_path)).verify()


def test_a_shard_overwritten_with_nan_is_refused(tmp_path):
    bank_with_two_shards(tmp_path)
    path = tmp_path / "shard-00001.safetensors"
    data = bytearray(path.read_bytes())
    data[-16:] = np.full(4, np.nan, dtype=np.float32).tobytes()  # the same size, tokens now NaN
    path.write_bytes(bytes(data))
    with pytest.raises(BankError, match="shard-00001.safetensors does not hold"):
        DemoBank.open(str(tmp_path)).keys("image")


def test_non_finite_fused_tokens_are_refused_and_nothing_is_written(tmp_path):
    bank = bank_with_two_shards(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(BankError, match="NaN or infinite.*nothing was written"):
        bank.append(*shard(6, 2, value=float("nan")))
    assert tree(tmp_path) == before and len(DemoBank.open(str(tmp_path))) == 6


def test_a_manifest_that_is_not_json(tmp_path):
    bank_with_two_shards(tmp_path)
    (tmp_path / "bank.json").write_text('{"format_version": 1, "shards": [')
    with pytest.raises(BankError, match="bank.json is not valid JSON.*aim compress-demos"):
        DemoBank.open(str(tmp_path))


def test_a_tampered_index_is_refused(tmp_path):
    bank = bank_with_two_shards(tmp_path)
    (tmp_path / "index.image.faiss").write_bytes(b"an index")
    bank.record_index("image", "index.image.faiss", len(bank))
    assert bank.index_path("image") == str(tmp_path / "index.image.faiss")
    (tmp_path / "index.image.faiss").write_bytes(b"an edited index")
    with pytest.raises(BankError, match="index.image.faiss does not hold the index the manifest recorded"):
        DemoBank.open(str(tmp_path)).index_path("image")


def test_a_damaged_faiss_file_is_one_line(tmp_path):
    from aim.retrieval import KeyIndex

    KeyIndex.build(np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)).save(tmp_path / "k.faiss")
    (tmp_path / "k.faiss").write_bytes(b"\x00" * 64)
    with pytest.raises(AimError) as err:
        KeyIndex.load(tmp_path / "k.faiss")
    assert "k.faiss is not a readable FAISS index" in str(err.value) and "\n" not in str(err.value)


def test_a_folder_that_is_not_a_bank_is_refused_and_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "shard-00000.safetensors").write_text("also mine: a bank whose manifest was lost, say")
    before = tree(tmp_path)
    with pytest.raises(BankError, match="not empty .*is not a demo bank.*--overwrite"):
        DemoBank.create(str(tmp_path), BACKBONE, FUSER, 8)
    assert tree(tmp_path) == before
    bank = DemoBank.create(str(tmp_path), BACKBONE, FUSER, 8, overwrite=True)
    bank.append(*shard(0, 2))
    assert (tmp_path / "notes.txt").read_text() == "mine"  # overwrite builds there; it deletes nothing


def test_a_layer_mismatch_is_named_as_such(tmp_path):
    bank_with_two_shards(tmp_path)
    with pytest.raises(BankError, match="made from layer -1 states; this fuser reads layer 15"):
        DemoBank.open(str(tmp_path), backbone=dict(BACKBONE, layer=15))


# ---------------------------------------------------------------------- locks
HOLD = "import sys, time; from aim.locking import FolderLock; FolderLock(sys.argv[1], 'bank').acquire(); " \
       "print('held', flush=True); time.sleep(60)"


@pytest.fixture
def held(tmp_path):
    """A live process (this host) holding the lock of ``tmp_path / 'bank'``."""
    folder = tmp_path / "bank"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc.pid
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_naming_the_holder(held):
    folder, pid = held
    before = tree(folder)
    with pytest.raises(LockedError, match=f"being written by process {pid} on {socket.gethostname()}"):
        with FolderLock(str(folder), "bank"):
            pass
    assert tree(folder) == before


def test_compress_demos_refuses_a_locked_bank(held, data):
    folder, pid = held
    path = jsonl(data, [row(0)])
    one_line(aim_cli("compress-demos", "--fuser", "identity", "--dataset", path, "--out", str(folder)),
             str(folder), f"process {pid}", "wait for it to finish")


def test_icl_eval_refuses_a_locked_run_folder(tiny_hf_folders, tmp_path):
    llava = aim.load_backbone(tiny_hf_folders("llava"))
    png(tmp_path / "0.png")
    records = aim.load_records(jsonl(tmp_path, [row(0), row(1)]))
    from aim.eval.config import IclEvalConfig
    from aim.eval.runner import IclEval

    run = IclEval(llava, records, IclEvalConfig(dataset="d", methods=("zero",), shots=(0,), seeds=(0,)),
                  str(tmp_path / "out"), run_id="r", progress=False)
    os.makedirs(run.folder_path)
    with open(os.path.join(run.folder_path, LOCK_NAME), "w") as f:  # a live process that is not this one
        json.dump({"pid": os.getppid(), "host": socket.gethostname(), "command": "aim icl-eval"}, f)
    with pytest.raises(LockedError, match=f"run folder .* is being written by process {os.getppid()}"):
        run.run()
    assert os.listdir(run.folder_path) == [LOCK_NAME]  # nothing was written under the other's lock


def test_a_stale_lock_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with FolderLock(str(tmp_path), "bank"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_from_another_host_says_how_to_clear_it(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "gpu-node-7", "command": "aim icl-eval"}))
    with pytest.raises(LockedError, match="process 1 on gpu-node-7.*another host.*remove .*.aim.lock"):
        FolderLock(str(tmp_path), "run folder").acquire()


# ---------------------------------------------------------------------- training
def training_run(tiny_hf_folders, tmp_path, steps=2):
    from aim.fusion import TRAINED_FUSER, FuserTrainConfig, train_fuser

    for i in range(6):
        png(tmp_path / f"{i}.png", color=(40 * i, 0, 0))
    pool = jsonl(tmp_path, [row(i, image=f"{i}.png") for i in range(6)])
    backbone = aim.load_backbone(tiny_hf_folders("llava"))
    cfg = FuserTrainConfig(out=str(tmp_path / "run"), data=pool, steps=steps, batch_size=2, max_shots=2, warmup=1,
                           save_every=1, eval_every=steps, val_examples=2, align=4,
                           fusion=dataclasses.replace(TRAINED_FUSER, layer=-1))
    return backbone, cfg, train_fuser


class Payload:
    """A pickle that runs a command when it is loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_planted_in_a_resume_point_never_runs(tiny_hf_folders, tmp_path):
    backbone, cfg, train_fuser = training_run(tiny_hf_folders, tmp_path)
    train_fuser(backbone, cfg)
    state, good = os.path.join(cfg.out, "state"), str(tmp_path / "good-state")
    shutil.copytree(state, good)
    marker = tmp_path / "pwned"
    cfg.steps = 3  # a longer run: it resumes from the resume point of step 2
    for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        shutil.rmtree(state)
        shutil.copytree(good, state)
        assert os.path.isfile(os.path.join(state, name)), os.listdir(state)
        with open(os.path.join(state, name), "wb") as f:
            pickle.dump(Payload(marker), f)
        if name == "random_states_0.pkl":  # accelerate skips RNG states it cannot read safely; batches are
            train_fuser(backbone, cfg)  # seeded by step anyway, so the run goes on
        else:
            with pytest.raises(ConfigError, match="cannot be read safely.*delete it to start the run over"):
                train_fuser(backbone, cfg)
        assert not marker.exists()


@pytest.mark.parametrize("args,words", [(["--batch-size", "0"], ["--batch-size must be a positive integer"]),
                                        (["--steps", "-1"], ["--steps and --warmup must be >= 0"]),
                                        (["--eval-every", "0"], ["--eval-every must be a positive integer"])])
def test_bad_training_numbers_are_one_line(tmp_path, args, words):
    one_line(aim_cli("train", "fuser", "--out", str(tmp_path / "run"), *args), *words)
    assert not (tmp_path / "run").exists()


def test_a_training_run_folder_has_one_writer(tiny_hf_folders, tmp_path):
    backbone, cfg, train_fuser = training_run(tiny_hf_folders, tmp_path)
    os.makedirs(cfg.out)
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(LockedError, match="training run .* is being written by process"):
        train_fuser(backbone, cfg)


# ---------------------------------------------------------------------- runs that must not succeed, and CLI words
@pytest.mark.parametrize("args,words", [
    (["--methods", "zero,,text"], ["empty item"]),
    (["--shots", "0,,4"], ["empty item"]),
])
def test_empty_list_items_are_refused(data, args, words):
    proc = aim_cli("icl-eval", "--dataset", jsonl(data, [row(0)]), *args)
    assert proc.returncode == 2 and all(w in proc.stderr for w in words), proc.stderr


def test_empty_pool_and_limit_zero_are_errors(data):
    path = jsonl(data, [row(0)])
    empty = jsonl(data, [], name="empty.jsonl")
    one_line(aim_cli("icl-eval", "--dataset", path, "--pool", empty, "--output", str(data / "out")),
             "--pool", "empty.jsonl", "gives no records")
    one_line(aim_cli("compress-demos", "--fuser", "identity", "--dataset", path, "--limit", "0",
                     "--out", str(data / "bank")), "gives no records", "--limit 0")
    assert not (data / "bank").exists()


def test_an_output_that_cannot_be_written_is_refused_before_loading(data):
    path = jsonl(data, [row(0)])
    start = time.perf_counter()
    one_line(aim_cli("icl-eval", "--dataset", path, "--methods", "zero", "--shots", "0",
                     "--output", str(data / "0.png" / "runs")), "--output", "cannot be written")
    assert time.perf_counter() - start < 60


def test_ctrl_c_says_the_run_resumes_and_the_rerun_finishes(tmp_path):
    out = tmp_path / "runs"
    args = ["icl-eval", "--dataset", "easy-vqa:test", "--limit", "24", "--methods", "zero", "--shots", "0",
            "--batch-size", "2", "--output", str(out), "--run-id", "r"]
    clean = {k: v for k, v in os.environ.items() if k != "AIM_ALLOW_OUTSIDE_PATHS"}
    # a shell's background job inherits SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # give the child the default disposition, as a terminal's Ctrl-C finds it
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), *args], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=dict(clean, HF_HUB_OFFLINE="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    samples = out / "r" / "samples.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (samples.exists() and samples.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-1500:]
    assert "interrupted: what was committed is kept" in err and "resume" in err
    kept = [json.loads(line) for line in samples.read_text().splitlines()]
    assert 2 <= len(kept) < 24 and not (out / "r" / LOCK_NAME).exists()
    again = aim_cli(*args)
    assert again.returncode == 0, again.stderr[-1500:]
    final = [json.loads(line) for line in samples.read_text().splitlines()]
    assert sorted(s["id"] for s in final) == sorted(f"test-{i}" for i in range(24))  # each once
    assert final[:len(kept)] == kept  # what was written before the interrupt is untouched


def test_resuming_on_a_changed_dataset_is_refused(tiny_hf_folders, tmp_path):
    from aim.eval.config import IclEvalConfig
    from aim.eval.runner import icl_eval

    llava = aim.load_backbone(tiny_hf_folders("llava"))
    png(tmp_path / "0.png")
    path = jsonl(tmp_path, [row(0), row(1)])
    config = IclEvalConfig(dataset=path, methods=("zero",), shots=(0,), seeds=(0,), max_new_tokens=2)
    icl_eval(llava, aim.load_records(path), config, str(tmp_path / "out"), run_id="r", progress=False)
    before = tree(tmp_path / "out")
    jsonl(tmp_path, [row(0), row(1, answers=["blue"])])  # one answer edited between two runs
    with pytest.raises(AimError, match="the dataset changed since this run started"):
        icl_eval(llava, aim.load_records(path), config, str(tmp_path / "out"), run_id="r", progress=False)
    assert tree(tmp_path / "out") == before


# ---------------------------------------------------------------------- nothing unpickles
UNSAFE = ("weights_only=False", "pickle.load", "pickle.loads", "allow_pickle=True", "torch.load(", "np.load(",
          "numpy.load(", "joblib.load", "dill.load")


def test_no_loader_unpickles():
    hits = []
    for base, _, names in os.walk(os.path.join(ROOT, "aim")):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(base, name)
                for number, line in enumerate(open(path, encoding="utf-8"), 1):
                    if any(u in line for u in UNSAFE) and "nothing unpickles" not in line:
                        hits.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert hits == []


def test_a_two_process_run_shares_the_lock_and_equals_one_process(tiny_hf_folders, tmp_path):
    """Two processes (torch.distributed on the CPU, as `accelerate launch` starts them) train one run
    folder: the main process holds the lock, and 2 x batch 2 gives the weights of 1 x batch 4."""
    for i in range(8):
        png(tmp_path / f"{i}.png", color=(30 * i, 10, 200 - 20 * i))
    pool = jsonl(tmp_path, [row(i, image=f"{i}.png", answers=[["red", "blue"][i % 2]]) for i in range(8)])
    common = ["train", "fuser", "--backbone", tiny_hf_folders("llava"), "--data", pool, "--steps", "3",
              "--max-shots", "2", "--layer", "-1", "--align", "4", "--save-every", "2", "--eval-every", "3",
              "--warmup", "1"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "aim.cli",
                          *common, "--out", str(tmp_path / "two"), "--batch-size", "2"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "two" / "state")) == ["model.safetensors", "optimizer.bin", "progress.json",
                                                              "random_states_0.pkl", "random_states_1.pkl",
                                                              "scheduler.bin"]
    assert not (tmp_path / "two" / LOCK_NAME).exists()  # released by the main process
    one = aim_cli(*common, "--out", str(tmp_path / "one"), "--batch-size", "4")
    assert one.returncode == 0, one.stderr[-3000:]
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "one" / "fusion_model.safetensors")), \
        load_file(str(tmp_path / "two" / "fusion_model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-4)


def test_a_resume_point_is_renamed_only_after_every_process_saved(tmp_path):
    """A slower process still writing its random_states_N.pkl must find state.tmp there (a CI run
    once saw rank 1 fail because the main process had already renamed it to state)."""
    import threading

    from aim.training.loop import save_resume_point

    barrier = threading.Barrier(2)

    class Process:
        def __init__(self, rank):
            self.process_index, self.is_main_process = rank, rank == 0

        def wait_for_everyone(self):
            barrier.wait(timeout=30)

        def save_state(self, folder):
            os.makedirs(folder, exist_ok=True)
            if self.process_index:
                time.sleep(0.5)  # the slow one
            with open(os.path.join(folder, f"random_states_{self.process_index}.pkl"), "wb") as f:
                f.write(b"rng")

    errors = []

    def run(rank):
        try:
            save_resume_point(Process(rank), str(tmp_path), 2, 1.0)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(os.listdir(tmp_path)) == ["state"]
    assert sorted(os.listdir(tmp_path / "state")) == ["progress.json", "random_states_0.pkl", "random_states_1.pkl"]


def test_stored_images_are_fingerprinted_without_decoding_them():
    import io

    from aim.data.hf import open_image_bytes
    from aim.data.record import Record
    from aim.eval.runner import records_fingerprint

    def stored(color):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4), color).save(buf, "PNG")
        image = open_image_bytes(buf.getvalue(), "t")
        decoded, load = [], image.load
        image.load = lambda: decoded.append(1) or load()
        return image, decoded

    (red, decoded), (blue, _) = stored("red"), stored("blue")
    a = records_fingerprint([Record("a", red, "q?", ["x"])])
    assert decoded == []  # a parquet of 10k images is not decoded to start a run
    assert a != records_fingerprint([Record("a", blue, "q?", ["x"])])
