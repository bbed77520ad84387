"""Fixtures shared by the tests: tiny Hugging Face checkpoints (tests/tiny_models.py), built once
per session, and small random images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_models


@pytest.fixture(scope="module")
def single_thread_torch():
    """Torch on one thread for the module: tiny models gain nothing from more, and on a shared
    2-core machine a second thread waiting for a busy core makes them several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_hf_root(tmp_path_factory):
    """The folder under which the tiny checkpoints are written."""
    return tmp_path_factory.mktemp("tiny_hf")


@pytest.fixture(scope="session")
def tiny_hf_folders(tiny_hf_root):
    """family -> a tiny checkpoint folder of that family, built on first request (once a session)."""
    built: dict[str, str] = {}

    def folder(family: str) -> str:
        if family not in built:
            built[family] = tiny_models.build(family, str(tiny_hf_root / family))
        return built[family]

    return folder


@pytest.fixture(scope="session", params=tiny_models.FAMILIES)
def tiny_hf_backbone(request, tiny_hf_folders):
    """Every Hugging Face family, as users load it: ``aim.load_backbone(folder)`` (float32, CPU)."""
    import aim

    return aim.load_backbone(tiny_hf_folders(request.param))


@pytest.fixture(scope="session")
def tiny_images():
    """Four random RGB images of different sizes and aspect ratios (so tiled and dynamic-resolution
    processors give different numbers of image tokens)."""
    rng = np.random.default_rng(0)
    sizes = [(30, 40), (50, 30), (28, 28), (48, 64)]  # (height, width)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory):
    """A JSONL dataset of 12 small random images, each asked "what colour?" (answers red / blue by
    turn): training sequences for the trainers' tests."""
    import json

    folder = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        rows.append({"question_id": i, "image": f"{i}.png", "question": "what colour?", "answers": [["red", "blue"][i % 2]]})
    path = folder / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def interrupt_after(monkeypatch):
    """``interrupt_after(step)``: the training loop's ``save_resume_point`` raises KeyboardInterrupt
    right after writing the resume point of ``step`` (a run killed there); returns a function that
    puts the real one back."""
    from aim.training import loop

    def arm(step: int):
        original = loop.save_resume_point

        def killed(accelerator, out, done, elapsed):
            original(accelerator, out, done, elapsed)
            if done == step:
                raise KeyboardInterrupt

        monkeypatch.setattr(loop, "save_resume_point", killed)
        return lambda: monkeypatch.setattr(loop, "save_resume_point", original)

    return arm
