"""4- and 8-bit weights (bitsandbytes) on CPU through ``load_backbone``, and the error without it."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import aim
import tiny_models
from aim import BackboneError, Demo
from aim.backbones import Generation

pytestmark = [pytest.mark.usefixtures("single_thread_torch"),
              # bitsandbytes, not this project, still uses torch.jit.script_method
              pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")]

#: bitsandbytes' CPU 4-bit kernels quantize in blocks of 64 input features: every linear layer of
#: the tiny LLaVA must be at least that wide (the language model already is)
WIDE_VISION = dict(tiny_models.VISION, hidden_size=64, intermediate_size=128)


@pytest.fixture(scope="module")
def llava_for_bnb(tmp_path_factory):
    return tiny_models.build_llava(str(tmp_path_factory.mktemp("llava_bnb")), vision=WIDE_VISION)


@pytest.fixture(scope="module")
def full_weights(llava_for_bnb):
    return aim.load_backbone(llava_for_bnb)


@pytest.mark.parametrize("flag, layer_type, quantization, min_corr", [
    ("load_in_4bit", "Linear4bit", "bnb-nf4", 0.8),
    ("load_in_8bit", "Linear8bitLt", "bnb-int8", 0.99),
])
def test_quantized_weights_on_cpu(llava_for_bnb, full_weights, tiny_images, flag, layer_type, quantization, min_corr):
    backbone = aim.load_backbone(llava_for_bnb, **{flag: True})
    layers = {type(m).__name__ for m in backbone.decoder.modules()}
    assert layer_type in layers
    assert backbone.fingerprint()["dtype"] == f"float32+{quantization}"
    assert full_weights.fingerprint()["dtype"] == "float32"

    batch = backbone.zero_shot_prompts(tiny_images[:2], ["What is it?", "What colour is the big square?"])
    logits = backbone.next_token_logits(batch)
    assert torch.isfinite(logits).all()
    reference = full_weights.next_token_logits(full_weights.zero_shot_prompts(tiny_images[:2],
                                              ["What is it?", "What colour is the big square?"]))
    for row, ref in zip(logits, reference):  # quantization noise, not another model
        assert torch.corrcoef(torch.stack([row, ref]))[0, 1] > min_corr

    out = backbone.generate(batch, max_new_tokens=3, stop=())
    assert len(out) == 2 and all(isinstance(g, Generation) and g.new_tokens <= 3 for g in out)
    (states,) = backbone.read_demos([Demo(tiny_images[0], "What is it?", "a cat")])
    assert torch.isfinite(states.hidden).all() and states.hidden.shape[1] == 64


@pytest.fixture
def llava_config_folder(tmp_path):
    """A folder that names the LLaVA family: enough to reach the loading options."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    return str(tmp_path)


@pytest.mark.parametrize("flag", ["load_in_4bit", "load_in_8bit"])
def test_without_bitsandbytes_the_error_says_how_to_install_it(llava_config_folder, monkeypatch, flag):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args, **kwargs: None if name == "bitsandbytes" else find_spec(name, *args, **kwargs))
    with pytest.raises(BackboneError) as err:
        aim.load_backbone(llava_config_folder, **{flag: True})
    assert flag in str(err.value) and "bitsandbytes" in str(err.value)
    assert "pip install bitsandbytes" in str(err.value)


def test_4bit_and_8bit_together_is_an_error(llava_config_folder):
    with pytest.raises(BackboneError, match="not both"):
        aim.load_backbone(llava_config_folder, load_in_4bit=True, load_in_8bit=True)
