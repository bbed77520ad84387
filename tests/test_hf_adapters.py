"""The Hugging Face adapters against the models' own forward passes, for every family.

Each family is a tiny random-weight checkpoint (tests/tiny_models.py) loaded with
``aim.load_backbone(folder)``. References are built without the adapter: prompt strings from the
chat template (or the literal turn format below) and the family's image placeholder, inputs from
the processor, outputs from ``model(...)`` / ``model.generate(...)``.
"""
from __future__ import annotations

import pytest
import torch

import aim
from aim import BackboneError, Demo, Virtual
from aim.backbones import Generation

pytestmark = pytest.mark.usefixtures("single_thread_torch")

ATOL = 1e-4

#: how one user turn reads in each family: (before the body, an image, after the body + generation prompt)
TURNS = {
    "llava": ("USER: ", "<image>\n", " ASSISTANT:"),
    "llava_next": ("[INST] ", "<image>\n", " [/INST]"),
    "qwen2_vl": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
                 "<|vision_start|><|image_pad|><|vision_end|>", "<|im_end|>\n<|im_start|>assistant\n"),
    "idefics2": ("User:", "<image>", "<end_of_utterance>\nAssistant:"),
    "idefics3": ("<|im_start|>User:", "<image>", "<end_of_utterance>\nAssistant:"),
}
TURNS["qwen2_5_vl"] = TURNS["qwen2_vl"]
TURNS["smolvlm"] = TURNS["idefics3"]
#: processors that take one list of images per prompt
NESTED_IMAGES = {"idefics2", "idefics3", "smolvlm"}

QUESTION = "What colour is the square?"


def family(backbone) -> str:
    return backbone.family


def hf_inputs(backbone, text: str, images: list) -> dict:
    """The processor's own inputs for one prompt string."""
    kwargs = {}
    if images:
        kwargs["images"] = [images] if family(backbone) in NESTED_IMAGES else images
    return dict(backbone.processor(text=[text], return_tensors="pt", **kwargs))


def hf_forward(backbone, text: str, images: list, **kwargs):
    with torch.no_grad():
        return backbone.model(**hf_inputs(backbone, text, images), **kwargs)


def hf_chat(backbone, content: list, generation: bool = True) -> str:
    """One user turn rendered by the checkpoint's chat template (content as a list of parts)."""
    return backbone.tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], chat_template=backbone.processor.chat_template,
        tokenize=False, add_generation_prompt=generation)


def turn(backbone, *parts) -> str:
    """A user turn with the generation prompt, built from the literal format: parts are str or None
    (an image). A turn that starts with text starts as the chat template renders it."""
    before, image, after = TURNS[family(backbone)]
    if parts and parts[0] is not None:
        rendered = hf_chat(backbone, [{"type": "text", "text": "\x00"}])
        before = rendered[: rendered.index("\x00")]  # Idefics: "User: " where an image follows "User:"
    return before + "".join(image if p is None else p for p in parts) + after


def demos(images) -> list[Demo]:
    return [Demo(images[0], "Which animal is it?", "a cat"),
            Demo(images[1], "How many?", "3"),
            Demo(images[2], "Is the sky in this picture blue or grey today?", "it is grey and cloudy")]


# ---------------------------------------------------------------------------- prompts and forwards


def test_turn_format_is_the_chat_template(tiny_hf_backbone):
    """The literal turn formats used below are what each checkpoint's template renders."""
    b = tiny_hf_backbone
    content = [{"type": "image"}, {"type": "text", "text": "Hi"}]
    assert hf_chat(b, content) == turn(b, None, "Hi")


def test_zero_shot_equals_the_models_forward(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    image = tiny_images[0]
    batch = b.zero_shot_prompts([image], [QUESTION])
    text = hf_chat(b, [{"type": "image"}, {"type": "text", "text": b.query_text(QUESTION)}])
    inputs = hf_inputs(b, text, [image])
    assert batch.input_ids[0].tolist() == inputs["input_ids"][0].tolist()
    assert batch.lengths == [inputs["input_ids"].shape[1]]
    with torch.no_grad():
        ref = b.model(**inputs).logits[:, -1]
    got = b.next_token_logits(batch)
    assert got.shape == (1, b.model.config.get_text_config().vocab_size)
    torch.testing.assert_close(got, ref.float(), atol=ATOL, rtol=0)
    # the image matters: another image gives other logits
    other = b.next_token_logits(b.zero_shot_prompts([tiny_images[1]], [QUESTION]))
    assert (other - got).abs().max() > 1e-3


@pytest.mark.parametrize("layer", [-1, 1])
def test_read_demos_are_the_text_positions_of_the_models_forward(tiny_hf_backbone, tiny_images, layer):
    b = tiny_hf_backbone
    demo = demos(tiny_images)[0]
    (states,) = b.read_demos([demo], layer=layer)
    text = b.demo_text(demo)
    ids = b.tokenizer(text, add_special_tokens=False).input_ids
    assert states.hidden.shape == (len(ids), b.hidden_size)
    assert states.token_ids.tolist() == ids
    # the reference: the demonstration's user turn, cut right after its text
    rendered = hf_chat(b, [{"type": "image"}, {"type": "text", "text": text}], generation=False)
    prompt = rendered[: rendered.index(text) + len(text)]
    inputs = hf_inputs(b, prompt, [demo.image])
    assert inputs["input_ids"][0, -len(ids):].tolist() == ids
    with torch.no_grad():
        out = b.model(**inputs, output_hidden_states=True)
    assert len(out.hidden_states) == b.model.config.get_text_config().num_hidden_layers + 1
    torch.testing.assert_close(states.hidden, out.hidden_states[layer][0, -len(ids):], atol=ATOL, rtol=0)


def test_read_demos_batched_equals_one_at_a_time(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    ds = demos(tiny_images)
    together = b.read_demos(ds)
    lengths = {len(s.token_ids) for s in together}
    assert len(lengths) > 1  # the batch really is padded
    for d, s in zip(ds, together):
        (alone,) = b.read_demos([d])
        assert s.token_ids.tolist() == alone.token_ids.tolist()
        torch.testing.assert_close(s.hidden, alone.hidden, atol=ATOL, rtol=0)


def test_zero_shot_batched_equals_one_at_a_time(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    questions = [QUESTION, "Why?", "Where was this photograph taken, and by whom, do you think?"]
    images = tiny_images[:3]
    batch = b.zero_shot_prompts(images, questions)
    assert len(set(batch.lengths)) > 1
    together = b.next_token_logits(batch)
    for i, (image, q) in enumerate(zip(images, questions)):
        alone = b.next_token_logits(b.zero_shot_prompts([image], [q]))
        torch.testing.assert_close(together[i:i + 1], alone, atol=ATOL, rtol=0)


def test_a_prompt_without_an_image_batches_with_prompts_with_one(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    batch = b.zero_shot_prompts([None, tiny_images[0]], ["Is a text-only question fine?", QUESTION])
    together = b.next_token_logits(batch)
    inputs = hf_inputs(b, turn(b, b.query_text("Is a text-only question fine?")), [])
    assert batch.lengths[0] == inputs["input_ids"].shape[1]
    with torch.no_grad():
        ref = b.model(**inputs).logits[:, -1]
    torch.testing.assert_close(together[:1], ref, atol=ATOL, rtol=0)
    alone = b.next_token_logits(b.zero_shot_prompts([tiny_images[0]], [QUESTION]))
    torch.testing.assert_close(together[1:], alone, atol=ATOL, rtol=0)


def test_a_demo_without_an_image_reads_its_tokens_in_the_prompt(tiny_hf_backbone):
    """Text right after the chat prefix may share a token with it ("USER: " + "Question" reads
    " Question"): the demonstration's positions are then the prompt's own tokens of its text."""
    b = tiny_hf_backbone
    demo = Demo(None, "Which animal is it?", "a cat")
    (states,) = b.read_demos([demo])
    text = b.demo_text(demo)
    prompt = turn(b, text)
    prompt = prompt[: prompt.index(text) + len(text)]
    inputs = hf_inputs(b, prompt, [])
    n = len(states.token_ids)
    assert abs(n - len(b.tokenizer(text, add_special_tokens=False).input_ids)) <= 1
    assert states.token_ids.tolist() == inputs["input_ids"][0, -n:].tolist()
    assert b.tokenizer.decode(states.token_ids).strip() == text.strip()
    with torch.no_grad():
        out = b.model(**inputs, output_hidden_states=True)
    torch.testing.assert_close(states.hidden, out.hidden_states[-1][0, -n:], atol=ATOL, rtol=0)


def test_virtual_tokens_slot_in_exactly_as_the_text_they_embed(tiny_hf_backbone, tiny_images):
    """Fused tokens equal to the embeddings of a demonstration's text give the logits of that text:
    positions included (Qwen2-VL's 3-axis rope counts on after the image before them)."""
    b = tiny_hf_backbone
    demo = demos(tiny_images)[2]
    text = b.demo_text(demo)
    ids = torch.tensor(b.tokenizer(text, add_special_tokens=False).input_ids)
    virtual = Virtual(b.embed_tokens(ids))
    query = b.query_text(QUESTION)
    as_text = b.encode([[demo.image, text, tiny_images[3], query]])
    as_virtual = b.encode([[demo.image, virtual, tiny_images[3], query]])
    assert as_virtual.lengths == as_text.lengths
    assert torch.equal(as_virtual.position_ids, as_text.position_ids)
    torch.testing.assert_close(b.next_token_logits(as_virtual), b.next_token_logits(as_text), atol=ATOL, rtol=0)


def test_virtual_tokens_before_the_query_equal_the_models_forward(tiny_hf_backbone, tiny_images):
    """The AIM prompt (fused tokens, then the query image and question) against the model run on
    token ids that hold the demonstration's text ids at the fused positions."""
    b = tiny_hf_backbone
    text = b.demo_text(demos(tiny_images)[1])
    ids = b.tokenizer(text, add_special_tokens=False).input_ids
    query = b.query_text(QUESTION)
    image = tiny_images[0]
    batch = b.encode([[Virtual(b.embed_tokens(torch.tensor(ids))), image, query]])
    # the reference: a filler token at the fused positions, replaced by the text's ids
    filler = b.tokenizer.unk_token
    inputs = hf_inputs(b, turn(b, filler * len(ids), None, query), [image])
    where = (inputs["input_ids"][0] == b.tokenizer.convert_tokens_to_ids(filler)).nonzero().flatten()
    assert where.tolist() == list(range(where[0], where[0] + len(ids)))
    inputs["input_ids"][0, where] = torch.tensor(ids)
    with torch.no_grad():
        ref = b.model(**inputs).logits[:, -1]
    assert batch.lengths == [inputs["input_ids"].shape[1]]
    torch.testing.assert_close(b.next_token_logits(batch), ref, atol=ATOL, rtol=0)


def test_a_checkpoint_without_chat_template_uses_the_familys_format(tiny_hf_folders, tiny_images):
    b = aim.load_backbone(tiny_hf_folders("llava"))
    b.processor.chat_template = b.tokenizer.chat_template = None
    batch = b.zero_shot_prompts(tiny_images[:1], [QUESTION])
    inputs = hf_inputs(b, f"USER: <image>\n{b.query_text(QUESTION)} ASSISTANT:", tiny_images[:1])
    assert batch.input_ids[0].tolist() == inputs["input_ids"][0].tolist()


# ---------------------------------------------------------------------------- generation


def test_generate_batched_equals_one_at_a_time_and_the_models_generate(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    questions = ["Why?", "What is written on the sign next to the door?"]
    images = tiny_images[:2]
    batch = b.zero_shot_prompts(images, questions)
    out = b.generate(batch, max_new_tokens=5, stop=())
    assert all(isinstance(g, Generation) for g in out)
    assert [g.prompt_tokens for g in out] == batch.lengths
    assert all(0 <= g.new_tokens <= 5 for g in out)
    for i, (image, q) in enumerate(zip(images, questions)):
        (alone,) = b.generate(b.zero_shot_prompts([image], [q]), max_new_tokens=5, stop=())
        assert alone == out[i]
        # the model's own greedy search from the processor's inputs, with its KV cache
        inputs = hf_inputs(b, turn(b, None, b.query_text(q)), [image])
        with torch.no_grad():
            seq = b.model.generate(**inputs, max_new_tokens=5, do_sample=False,
                                   eos_token_id=b.extra_eos_ids or None, pad_token_id=b.pad_id)
        new = seq[0, inputs["input_ids"].shape[1]:].tolist()
        while new and new[-1] in b.extra_eos_ids:
            new.pop()
        assert alone.new_tokens == len(new)
        assert alone.text == b.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_generate_stops_at_a_stop_string(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    batch = b.zero_shot_prompts(tiny_images[:1], [QUESTION])
    (free,) = b.generate(batch, max_new_tokens=4, stop=())
    if not free.text:
        pytest.skip("the random model ends its answer at once")
    first_char = free.text[0]
    (cut,) = b.generate(batch, max_new_tokens=4, stop=(first_char,))
    assert cut.text == "" and 1 <= cut.new_tokens <= free.new_tokens


# ---------------------------------------------------------------------------- baselines, keys, fingerprint


def test_raw_icl_prompt_is_the_processors_multi_image_prompt(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    ds = demos(tiny_images)[:2]
    body = b.raw_icl_body(ds, tiny_images[3], QUESTION)
    batch = b.encode([body])
    text = turn(b, None, b.demo_text(ds[0]), None, b.demo_text(ds[1]), None, b.query_text(QUESTION))
    images = [ds[0].image, ds[1].image, tiny_images[3]]
    inputs = hf_inputs(b, text, images)
    assert batch.lengths == [inputs["input_ids"].shape[1]]
    assert batch.input_ids[0].tolist() == inputs["input_ids"][0].tolist()
    with torch.no_grad():
        ref = b.model(**inputs).logits[:, -1]
    torch.testing.assert_close(b.next_token_logits(batch), ref, atol=ATOL, rtol=0)


def test_text_icl_prompt_runs(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    ds = demos(tiny_images)[:2]
    body = b.text_icl_body(ds, tiny_images[3], QUESTION)
    assert sum(isinstance(s, str) for s in body) == 1  # the query; demonstrations are their token embeddings
    for seg, d in zip(body, ds):
        ids = b.tokenizer(b.demo_text(d), add_special_tokens=False).input_ids
        torch.testing.assert_close(seg.embeds, b.embed_tokens(torch.tensor(ids)), atol=0, rtol=0)
    logits = b.next_token_logits(b.encode([body]))
    assert torch.isfinite(logits).all()


def test_image_features(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    feats = b.image_features(tiny_images[:3])
    assert feats.shape == (3, b.hidden_size) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    assert (feats[0] - feats[1]).abs().max() > 1e-4
    torch.testing.assert_close(b.image_features(tiny_images[1:2])[0], feats[1], atol=ATOL, rtol=0)


def test_fingerprint(tiny_hf_backbone, tiny_hf_folders):
    b = tiny_hf_backbone
    fp = b.fingerprint()
    assert fp["family"] == family(b)
    assert fp["model"] == tiny_hf_folders(family(b))
    assert fp["dtype"] == "float32"
    assert fp["hidden_size"] == 64 == b.hidden_size
    assert fp["layer"] == -1 and b.fingerprint(layer=1)["layer"] == 1


def test_a_prompt_naming_the_fused_marker_is_refused(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    virtual = Virtual(b.embed_tokens(torch.tensor([1, 2])))
    with pytest.raises(BackboneError, match="fused tokens"):
        b.encode([[virtual, tiny_images[0], "say " + b.virtual_token]])
