"""Prompt assembly is exact: fused tokens that are the demonstrations' own text embeddings give the
text-only prompt's logits, on the pocket backbone and on every Hugging Face family."""

import numpy as np
import pytest
import torch
from PIL import Image

import aim
from aim.prompting import METHODS, assemble


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40 + 4 * i, 48, 3), dtype=np.uint8)) for i in range(n)]


def check_identity_fused_equals_text(bb):
    demo_imgs, query_imgs = images(3), images(2, seed=1)
    demos = [[aim.Demo(demo_imgs[0], "what shape is it?", "circle"), aim.Demo(demo_imgs[1], "and its colour?", "red")],
             [aim.Demo(demo_imgs[2], "what is in the picture?", "a small blue triangle")]]
    questions = ["what shape is this?", "what is it?"]
    fused = [[bb.embed_tokens(s.token_ids) for s in bb.read_demos(d)] for d in demos]
    text = assemble(bb, "text", query_imgs, questions, demos=demos)
    fused_batch = assemble(bb, "fused", query_imgs, questions, fused=fused)
    assert fused_batch.lengths == text.lengths
    diff = (bb.next_token_logits(fused_batch) - bb.next_token_logits(text)).abs().max()
    assert diff <= 1e-4, diff


def test_pocket_identity_fused_equals_text_only():
    torch.set_num_threads(1)
    bb = aim.load_backbone("pocket")
    check_identity_fused_equals_text(bb)
    # token counts per method: raw pays 16 image tokens per demonstration, fused pays its text only
    q, d = images(1, seed=3), [[aim.Demo(i, "what is it?", "a bag") for i in images(4, seed=4)]]
    fused = [[bb.embed_tokens(s.token_ids) for s in bb.read_demos(d[0])]]
    lengths = {m: assemble(bb, m, q, ["what is it?"], demos=d, fused=fused).lengths[0] for m in METHODS}
    assert lengths["raw"] - lengths["text"] == 4 * bb.image_tokens
    assert lengths["fused"] == lengths["text"] > lengths["zero"]


def test_hf_identity_fused_equals_text_only(tiny_hf_backbone, single_thread_torch):
    check_identity_fused_equals_text(tiny_hf_backbone)


def test_unknown_method_and_missing_fused(tiny_hf_folders):
    bb = aim.load_backbone(tiny_hf_folders("llava"))
    with pytest.raises(aim.AimError, match="unknown method 'rices'"):
        assemble(bb, "rices", [None], ["q"])
    with pytest.raises(aim.AimError, match="needs fused tokens"):
        assemble(bb, "fused", [None], ["q"], demos=[[aim.Demo(None, "q", "a")]])
