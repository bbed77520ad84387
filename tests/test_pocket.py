"""The pocket backbone through the protocol: exactness of the embeds path, demonstration reading,
several images per prompt, generation, and its loading errors."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from aim import BackboneError, Demo, ImageError, Virtual, load_backbone


@pytest.fixture(scope="module")
def pocket(single_thread_torch):
    # one thread: the batched-against-direct comparisons below hold to 1e-4 there; with two threads
    # a different reduction order reaches 1e-4 on last-layer states of norm ~150
    return load_backbone("pocket")


def image(seed, size=64):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def direct_embeds(bb, body, generation=True):
    """The pocket prompt built by hand: chat prefix tokens, image tokens, text tokens."""
    prefix, gen_suffix, _ = bb.chat_parts()
    parts = []
    for seg in [prefix] + body + ([gen_suffix + bb.answer_prefix] if generation else []):
        if isinstance(seg, str):
            ids = torch.tensor(bb.tokenizer(seg, add_special_tokens=False).input_ids)
            parts.append(bb.llm.get_input_embeddings()(ids))
        else:
            pixels = bb.vision.preprocess([seg])
            parts.append(bb.connector(bb.vision(pixels))[0])
    return torch.cat(parts)[None]


def test_zero_shot_logits_equal_a_direct_forward(pocket):
    bodies = [[image(0), "What colour is the shape?"], [image(1), "Is there a circle in the image? Be brief."]]
    batch = pocket.encode(bodies)
    logits = pocket.next_token_logits(batch)
    for i, body in enumerate(bodies):
        with torch.no_grad():
            ref = pocket.llm(inputs_embeds=direct_embeds(pocket, body)).logits[0, -1]
        assert (logits[i] - ref).abs().max() < 1e-4
        alone = pocket.next_token_logits(pocket.encode([body]))
        assert (alone[0] - ref).abs().max() < 1e-4


def test_read_demos_states_are_the_text_positions(pocket):
    demos = [Demo(image(2), "what shape is in the image?", "circle"),
             Demo(image(3), "what color is the big shape on the left?", "dark blue")]
    batch_states = pocket.read_demos(demos)
    for d, st in zip(demos, batch_states):
        ids = pocket.tokenizer(pocket.demo_text(d), add_special_tokens=False).input_ids
        assert st.token_ids.tolist() == ids
        assert st.hidden.shape == (len(ids), pocket.hidden_size)
        body = [d.image, pocket.demo_text(d)]
        prefix = pocket.chat_parts()[0]
        embeds = direct_embeds(pocket, body, generation=False)
        with torch.no_grad():
            ref = pocket.llm(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1][0, -len(ids):]
        assert (st.hidden - ref).abs().max() < 1e-4
        one = pocket.read_demos([d])[0]
        assert (one.hidden - st.hidden).abs().max() < 1e-4
        assert prefix.startswith("<|im_start|>")


def test_middle_layer_and_several_images(pocket):
    demos = [Demo(image(4), "what is it?", "a bag"), Demo(image(5), "what is it?", "a coat")]
    mid = pocket.read_demos(demos, layer=15)
    last = pocket.read_demos(demos)
    assert not torch.allclose(mid[0].hidden, last[0].hidden)
    raw = pocket.encode([pocket.raw_icl_body(demos, image(6), "what is it?")])
    text = pocket.encode([pocket.text_icl_body(demos, image(6), "what is it?")])
    assert raw.lengths[0] - text.lengths[0] == 2 * pocket.image_tokens


def test_virtual_tokens_equal_their_text(pocket):
    demo = Demo(None, "what shape is this?", "triangle")
    ids = torch.tensor(pocket.tokenizer(pocket.demo_text(demo), add_special_tokens=False).input_ids)
    fused = pocket.encode([[Virtual(pocket.embed_tokens(ids))] + pocket.query_body(image(7), "what shape?")])
    text = pocket.encode([pocket.text_icl_body([demo], image(7), "what shape?")])
    assert (pocket.next_token_logits(fused) - pocket.next_token_logits(text)).abs().max() < 1e-4


def test_generate_batch_equals_one_at_a_time(pocket):
    imgs, qs = [image(8), image(9)], ["What is shown in the image?", "What colour is it? Answer in one word."]
    both = pocket.answer(imgs, qs, max_new_tokens=6)
    for i in range(2):
        alone = pocket.answer([imgs[i]], [qs[i]], max_new_tokens=6)[0]
        assert alone.text == both[i].text
        assert both[i].new_tokens <= 6
    no_image = pocket.answer([None], [qs[0]], max_new_tokens=6)[0]
    assert no_image.prompt_tokens == both[0].prompt_tokens - pocket.image_tokens


def test_image_features_and_fingerprint(pocket):
    feats = pocket.image_features([image(10), image(11)])
    assert feats.shape == (2, pocket.hidden_size) and torch.isfinite(feats).all()
    fp = pocket.fingerprint()
    assert fp["family"] == "pocket" and fp["hidden_size"] == 576 and fp["layer"] == -1 and fp["revision"]


def test_missing_and_corrupt_images(pocket, tmp_path):
    with pytest.raises(ImageError, match="nope.png"):
        pocket.answer([str(tmp_path / "nope.png")], ["q"])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match="bad.png.*corrupt"):
        pocket.read_demos([Demo(str(bad), "q", "a")])


def test_what_ships_with_it(pocket):
    from aim.backbones.pocket import DEFAULT_FUSER, STAGE1_CONNECTOR, PocketBackbone

    assert PocketBackbone.ships_weights and pocket.model_id == "pocket"
    assert pocket.end_of_turn == "<|im_end|>"  # read off SmolLM2's chat template
    assert pocket.shipped_fuser() == DEFAULT_FUSER
    stage1 = load_backbone(f"pocket:{STAGE1_CONNECTOR}")
    assert stage1.model_id.startswith("pocket:") and stage1.shipped_fuser() is None  # made for the default only


@pytest.mark.skipif(not (os.path.isdir("/usr/share/datasets/fashion-mnist") and os.path.isdir("/usr/share/openclipart")),
                    reason="Fashion-MNIST or openclipart-png not installed")
def test_its_own_training_sequences(pocket):
    source = pocket.training_sequences(seed=0, max_shots=3)
    seqs = [source.sample(np.random.default_rng([0, i])) for i in range(12)]
    assert all(0 <= len(s.demos) <= 3 and s.target and s.image is not None for s in seqs)
    assert "pocket episodes" in source.description and "0-3 demonstrations" in source.description


def test_connector_folder_errors(tmp_path):
    with pytest.raises(BackboneError, match="not a connector checkpoint"):
        load_backbone(f"pocket:{tmp_path}")


def test_sampling_is_seeded(pocket):
    batch = pocket.zero_shot_prompts([image(12)], ["Describe the image."])
    greedy = pocket.generate(batch, max_new_tokens=8)[0].text
    assert pocket.generate(batch, max_new_tokens=8, temperature=0.0, seed=5)[0].text == greedy
    a = [pocket.generate(batch, max_new_tokens=8, temperature=1.5, seed=s)[0].text for s in range(4)]
    b = [pocket.generate(batch, max_new_tokens=8, temperature=1.5, seed=s)[0].text for s in range(4)]
    assert a == b and len(set(a)) > 1
