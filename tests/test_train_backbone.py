"""Stage 2 of the pocket backbone: a run interrupted after a checkpoint and resumed ends with the
same connector and LoRA as an uninterrupted one, and the run folder is a pocket checkpoint that
``load_backbone("pocket:FOLDER")`` loads with the LoRA merged."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from aim.backbones.pocket import assets
from aim.backbones.pocket import train_icl as training

pytestmark = pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist")
                                and "AIM_FASHION_MNIST" not in os.environ, reason="Fashion-MNIST not installed")


@pytest.fixture
def cache(tmp_path, monkeypatch, single_thread_torch):
    real = assets.llm_folder()
    monkeypatch.setenv("AIM_CACHE", str(tmp_path / "cache"))
    os.makedirs(tmp_path / "cache")
    os.symlink(real, tmp_path / "cache" / assets.LLM_NAME)
    return tmp_path


def config(out):
    return training.BackboneTrainConfig(out=str(out), steps=3, batch_size=2, grad_accum=2, image_size=64,
                                        image_sets="fashion-mnist,patterns", easy_vqa_images=8, max_shots=3,
                                        lora_r=2, lora_alpha=4, val_examples=2, eval_every=3, save_every=2,
                                        log_every=1, warmup=1)


def test_resume_gives_the_same_backbone(cache, interrupt_after):
    straight = training.train_backbone(config(cache / "a"))
    restore = interrupt_after(2)
    with pytest.raises(KeyboardInterrupt):
        training.train_backbone(config(cache / "b"))
    assert not os.path.exists(cache / "b" / "adapter_model.safetensors")
    restore()
    resumed = training.train_backbone(config(cache / "b"))
    for name in ("connector.safetensors", "adapter_model.safetensors"):
        a, b = load_file(os.path.join(straight, name)), load_file(os.path.join(resumed, name))
        assert a.keys() == b.keys() and len(a) > 0
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), (name, key)
    log = [json.loads(line) for line in open(cache / "b" / "log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert {"val_loss_binding", "val_first_token_binding"} & set(log[-1])
    cfg = json.load(open(cache / "b" / "connector_config.json"))
    assert "binding on fashion-mnist" in cfg["training"]["data"] and cfg["training"]["lora"]["r"] == 2
    assert cfg["image_size"] == 64  # the stage-1 connector (128 px) resized: its MLP runs per cell

    import aim
    from aim.backbones.pocket import PocketBackbone

    merged = aim.load_backbone(f"pocket:{resumed}")
    assert isinstance(merged, PocketBackbone) and "+" in merged.revision()  # connector + adapter digests
    assert not any("lora" in n for n, _ in merged.llm.named_parameters())  # merged, plain weights again
    plain = aim.load_backbone("pocket")
    q = plain.embed_tokens(torch.tensor([1, 2, 3]))
    assert torch.equal(q, merged.embed_tokens(torch.tensor([1, 2, 3])))  # embeddings untouched by LoRA
    w = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(plain.llm.named_parameters())[w], dict(merged.llm.named_parameters())[w])


def test_a_run_can_start_from_a_shipped_adapter(cache):
    """--init-adapter: the LoRA starts as the given checkpoint's (float16 on disk), trainable."""
    from aim.backbones.pocket.config import DEFAULT_CHECKPOINT
    from aim.backbones.pocket.model import PocketBackbone

    cfg = training.BackboneTrainConfig(init_adapter=DEFAULT_CHECKPOINT, image_size=64)
    backbone = PocketBackbone.from_pretrained(cfg.init, connector=training.start_connector(cfg))
    peft_model = training.add_lora(backbone, cfg)
    saved = load_file(os.path.join(DEFAULT_CHECKPOINT, "adapter_model.safetensors"))
    params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert len(params) == len(saved) > 0
    for name, value in saved.items():
        key = next(n for n in params if n.replace(".default", "") == name)
        assert torch.allclose(params[key].float(), value.float(), atol=1e-3), name
    assert backbone.image_tokens == 4
