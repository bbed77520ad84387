"""The connector's training loop: a run interrupted after a checkpoint and resumed ends with the
same weights as an uninterrupted one; the run folder holds a loadable checkpoint, log and plot."""
import json
import os

import pytest
import torch

from aim.backbones.pocket import assets
from aim.backbones.pocket.connector import Connector
from aim.backbones.pocket import train_connector as training

pytestmark = pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist")
                                and "AIM_FASHION_MNIST" not in os.environ, reason="Fashion-MNIST not installed")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    real = assets.llm_folder()
    monkeypatch.setenv("AIM_CACHE", str(tmp_path / "cache"))
    os.makedirs(tmp_path / "cache")
    os.symlink(real, tmp_path / "cache" / assets.LLM_NAME)
    return tmp_path


def config(out):
    return training.ConnectorTrainConfig(out=str(out), steps=4, batch_size=3, easy_vqa_images=12,
                                         fashion_per_class=1, val_examples=4, eval_every=2, save_every=2,
                                         log_every=1, warmup=2)


def test_resume_gives_the_same_connector(cache, interrupt_after):
    straight = Connector.from_pretrained(training.train_connector(config(cache / "a")))

    restore = interrupt_after(2)
    with pytest.raises(KeyboardInterrupt):
        training.train_connector(config(cache / "b"))
    assert not os.path.exists(cache / "b" / "connector.safetensors")
    assert os.path.isfile(cache / "b" / "state" / "progress.json")  # the resume point of step 2
    restore()
    resumed = Connector.from_pretrained(training.train_connector(config(cache / "b")))
    for key, value in straight.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key

    log = [json.loads(line) for line in open(cache / "b" / "log.jsonl")]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert os.path.isfile(cache / "b" / "loss.png")
    cfg = json.load(open(cache / "b" / "connector_config.json"))
    assert "Fashion-MNIST train" in cfg["training"]["data"]
