"""Models larger than one device: ``device_map`` with ``max_memory`` and an offload folder (accelerate's
big-model loading) splits every adapter's model between the CPU and the disk here, and the split model
answers and scores exactly as the whole one does."""
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from aim import load_backbone
from aim.errors import AimError, BackboneError
import tiny_models

pytestmark = pytest.mark.usefixtures("single_thread_torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def answers(backbone, image):
    batch = backbone.encode([backbone.query_body(image, "What colour is it?")])
    text = [g.text for g in backbone.generate(batch, max_new_tokens=4)]
    (lik,) = backbone.loglikelihood([backbone.query_body(image, "What colour is it?")], [" red"])
    return text, lik.logprob


def half_of(module) -> int:
    return int(sum(p.numel() * p.element_size() for p in module.parameters()) * 0.5)


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_each_family_split_over_cpu_and_disk_answers_as_a_whole(family, tiny_hf_folders, tmp_path):
    folder = tiny_hf_folders(family)
    whole = load_backbone(folder)
    split = load_backbone(folder, device_map="auto", max_memory={"cpu": half_of(whole.model)},
                          offload_folder=str(tmp_path / "offload"))
    placed = set(split.model.hf_device_map.values())
    assert placed == {"cpu", "disk"}, split.model.hf_device_map
    assert split.device == torch.device("cpu")  # offloaded layers run where the inputs are
    image = Image.new("RGB", (30, 30), (200, 20, 20))
    text, logprob = answers(whole, image)
    got_text, got_logprob = answers(split, image)
    assert got_text == text and got_logprob == pytest.approx(logprob, abs=1e-4)


def test_the_pocket_split_over_cpu_and_disk_answers_as_a_whole(tmp_path):
    whole = load_backbone("pocket")
    split = load_backbone("pocket", device_map="auto", max_memory={"cpu": half_of(whole.llm)},
                          offload_folder=str(tmp_path / "offload"))
    assert set(split.llm.hf_device_map.values()) == {"cpu", "disk"}
    image = Image.new("RGB", (64, 64), (30, 30, 220))
    text, logprob = answers(whole, image)
    got_text, got_logprob = answers(split, image)
    assert got_text == text and got_logprob == pytest.approx(logprob, abs=1e-4)


def test_options_that_need_a_device_map_say_so(tiny_hf_folders):
    with pytest.raises(BackboneError, match="add --device-map auto"):
        load_backbone(tiny_hf_folders("llava"), max_memory={"cpu": "1GiB"})
    with pytest.raises(BackboneError, match="give an offload folder"):
        load_backbone("pocket", device_map="auto", max_memory={"cpu": 1_000_000})
    from aim.cli import parse_max_memory

    assert parse_max_memory("0=20GiB,1=20GiB,cpu=64GiB") == {0: "20GiB", 1: "20GiB", "cpu": "64GiB"}
    with pytest.raises(AimError, match="DEVICE=SIZE"):
        parse_max_memory("20GiB")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "answer", "--max-memory", "cpu=1GiB"],
                          capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=120)
    assert proc.returncode == 2 and "go with --device-map" in proc.stderr
