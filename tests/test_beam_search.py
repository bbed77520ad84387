"""Beam search through transformers' generate from the prompt's embeddings, against the model's own
generate on the processor's inputs (every tiny family that allows it) and the pocket's LLM."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aim import BackboneError, load_backbone
from test_hf_adapters import hf_inputs, turn

pytestmark = pytest.mark.usefixtures("single_thread_torch")

QUESTIONS = ["Why?", "What is written on the sign next to the door?"]


def test_one_beam_is_todays_greedy_output(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    batch = b.zero_shot_prompts(tiny_images[:2], QUESTIONS)
    assert b.generate(batch, max_new_tokens=5, num_beams=1) == b.generate(batch, max_new_tokens=5)


def test_three_beams_equal_the_models_own_beam_search(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    batch = b.zero_shot_prompts(tiny_images[:2], QUESTIONS)
    if batch.position_ids.dim() == 3:  # Qwen2-VL's 3-axis rope positions
        with pytest.raises(BackboneError, match="use --num-beams 1"):
            b.generate(batch, max_new_tokens=5, num_beams=3)
        return
    out = b.generate(batch, max_new_tokens=5, num_beams=3, stop=())
    for i, (image, q) in enumerate(zip(tiny_images[:2], QUESTIONS)):
        inputs = hf_inputs(b, turn(b, None, b.query_text(q)), [image])
        with torch.no_grad():
            seq = b.model.generate(**inputs, max_new_tokens=5, num_beams=3, do_sample=False,
                                   eos_token_id=[b.tokenizer.eos_token_id] + list(b.extra_eos_ids), pad_token_id=b.pad_id)
        new = seq[0, inputs["input_ids"].shape[1]:].tolist()
        while new and (new[-1] in b.extra_eos_ids or new[-1] in (b.tokenizer.eos_token_id, b.pad_id)):
            new.pop()
        assert out[i].new_tokens == len(new)
        assert out[i].text == b.tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def pocket():
    return load_backbone("pocket")


def test_pocket_beam_search(pocket):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]
    batch = pocket.zero_shot_prompts(images, ["What colour is the shape?", "Describe the image briefly."])
    assert pocket.generate(batch, max_new_tokens=6, num_beams=1) == pocket.generate(batch, max_new_tokens=6)
    beams = pocket.generate(batch, max_new_tokens=6, num_beams=3, stop=())
    for i in range(2):
        alone = pocket.zero_shot_prompts(images[i:i + 1], [["What colour is the shape?", "Describe the image briefly."][i]])
        with torch.no_grad():
            seq = pocket.llm.generate(inputs_embeds=alone.inputs_embeds, attention_mask=alone.attention_mask,
                                      max_new_tokens=6, num_beams=3, do_sample=False,
                                      eos_token_id=pocket.tokenizer.eos_token_id, pad_token_id=pocket.pad_id)
        new = seq[0].tolist()
        while new and new[-1] in (pocket.tokenizer.eos_token_id, pocket.pad_id):
            new.pop()
        assert beams[i].text == pocket.tokenizer.decode(new, skip_special_tokens=True).strip()
