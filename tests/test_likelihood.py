"""``Backbone.loglikelihood`` and rank classification against the models' own forward passes: every
tiny Hugging Face family and the pocket backbone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aim import Demo, load_backbone
from aim.prompting import prompt_body
from test_hf_adapters import hf_inputs, turn

pytestmark = pytest.mark.usefixtures("single_thread_torch")

QUESTION = "What colour is the square?"


def reference_logprob(model_logits: torch.Tensor, ids: list[int], start: int) -> float:
    """The sum of log-softmax(logits) at the tokens from ``start`` on (each predicted by the one before)."""
    logprobs = torch.log_softmax(model_logits.float(), -1)
    return float(sum(logprobs[t - 1, ids[t]] for t in range(start, len(ids))))


@pytest.mark.parametrize("continuation", [" yes", " a red square, twice"])
def test_loglikelihood_equals_the_models_forward(tiny_hf_backbone, tiny_images, continuation):
    b = tiny_hf_backbone
    image = tiny_images[0]
    (got,) = b.loglikelihood([b.query_body(image, QUESTION)], [continuation])
    context = turn(b, None, b.query_text(QUESTION))
    context_ids = hf_inputs(b, context, [image])["input_ids"][0].tolist()
    inputs = hf_inputs(b, context + continuation, [image])
    ids = inputs["input_ids"][0].tolist()
    assert ids[:len(context_ids)] == context_ids  # the continuation starts on a token boundary here
    with torch.no_grad():
        logits = b.model(**inputs).logits[0]
    assert got.tokens == len(ids) - len(context_ids)
    assert got.logprob == pytest.approx(reference_logprob(logits, ids, len(context_ids)), abs=1e-3)
    greedy = all(int(logits[t - 1].argmax()) == ids[t] for t in range(len(context_ids), len(ids)))
    assert got.greedy == greedy


def test_loglikelihood_batched_equals_one_at_a_time(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    demos = [Demo(tiny_images[1], "How many?", "3"), Demo(tiny_images[2], "Which animal?", "a cat")]
    bodies = [prompt_body(b, "zero", tiny_images[0], QUESTION),
              prompt_body(b, "raw", tiny_images[0], "Why?", demos=demos),
              prompt_body(b, "text", None, "And now?", demos=demos)]
    continuations = [" no", " because it rains", " 4"]
    batched = b.loglikelihood(bodies, continuations, batch_size=3)
    for body, cont, got in zip(bodies, continuations, batched):
        (alone,) = b.loglikelihood([body], [cont])
        assert got.tokens == alone.tokens and got.greedy == alone.greedy
        assert got.logprob == pytest.approx(alone.logprob, abs=1e-3)


def test_rank_classes_scores_every_class_in_order(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    bodies = [b.query_body(tiny_images[0], QUESTION), b.query_body(tiny_images[1], QUESTION)]
    classes = [["red", "blue", "green"], ["yes", "no"]]
    ranked = b.rank_classes(b.encode(bodies), classes)
    assert [len(r) for r in ranked] == [3, 2]
    for body, names, row in zip(bodies, classes, ranked):
        direct = b.loglikelihood([body] * len(names), [" " + n for n in names])
        assert [r.logprob for r in row] == pytest.approx([d.logprob for d in direct], abs=1e-3)


def test_loglikelihood_refuses_an_empty_continuation(tiny_hf_backbone, tiny_images):
    b = tiny_hf_backbone
    with pytest.raises(ValueError, match="no tokens of its own"):
        b.loglikelihood([b.query_body(tiny_images[0], QUESTION)], [""])
    with pytest.raises(ValueError, match="2 prompts but 1 continuations"):
        b.loglikelihood([[QUESTION], [QUESTION]], [" yes"])


# ---------------------------------------------------------------------------- the pocket backbone

@pytest.fixture(scope="module")
def pocket():
    return load_backbone("pocket")


def image(seed, size=64):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def pocket_direct(bb, body, continuation):
    """The pocket prompt built by hand (chat prefix, image tokens, text tokens, the answer prefix,
    the continuation's tokens) through the LLM's own forward -> (logits, ids, continuation start)."""
    prefix, gen_suffix, _ = bb.chat_parts()
    parts, ids = [], []
    for seg in [prefix] + body + [gen_suffix + bb.answer_prefix, continuation]:
        if isinstance(seg, str):
            tid = bb.tokenizer(seg, add_special_tokens=False).input_ids
            parts.append(bb.llm.get_input_embeddings()(torch.tensor(tid)))
            ids += tid
        else:
            emb = bb.connector(bb.vision(bb.vision.preprocess([seg])))[0]
            parts.append(emb)
            ids += [-1] * emb.shape[0]
    start = len(ids) - len(bb.tokenizer(continuation, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logits = bb.llm(inputs_embeds=torch.cat(parts)[None]).logits[0]
    return logits, ids, start


def test_pocket_loglikelihood_equals_a_direct_forward(pocket):
    demos = [Demo(image(3), "What is this?", "a bag"), Demo(image(4), "What is this?", "a shoe")]
    bodies = [pocket.query_body(image(0), "What colour is the shape?"),
              prompt_body(pocket, "raw", image(1), "What is this?", demos=demos)]
    continuations = [" red", " a bag"]
    got = pocket.loglikelihood(bodies, continuations)
    for body, cont, lik in zip(bodies, continuations, got):
        logits, ids, start = pocket_direct(pocket, body, cont)
        assert lik.tokens == len(ids) - start
        assert lik.logprob == pytest.approx(reference_logprob(logits, ids, start), abs=1e-3)


def test_pocket_greedy_answer_is_greedy_under_loglikelihood(pocket):
    body = pocket.query_body(image(0), "What colour is the shape?")
    (gen,) = pocket.generate(pocket.encode([body]), max_new_tokens=4, stop=())
    assert gen.text
    (lik,) = pocket.loglikelihood([body], [pocket.continuation_text(gen.text)])
    ranked = pocket.rank_classes(pocket.encode([body]), [[gen.text, gen.text + " and a cat"]])[0]
    assert ranked[0].logprob == pytest.approx(lik.logprob, abs=1e-4)
    assert ranked[0].logprob > ranked[1].logprob  # a longer continuation adds tokens of negative log-probability


def test_answer_loss_in_length_groups_equals_one_batch(tiny_hf_backbone, tiny_images):
    """The training loss run in length-sorted groups (``group``) gives each prompt the figures it
    gets in one padded batch, in the prompts' order."""
    from aim.training.loss import answer_loss, answer_prompts

    b = tiny_hf_backbone
    demos = [Demo(tiny_images[i % 3], f"Question {i}?", f"answer {i}") for i in range(4)]
    bodies = [prompt_body(b, "raw", tiny_images[0], QUESTION, demos=demos[:n]) for n in (3, 0, 1, 2, 0)]
    prompts = answer_prompts(b, bodies, [" yes", " a long answer here", " 4", " no", " blue"])
    with torch.no_grad():
        whole, grouped = answer_loss(b, prompts), answer_loss(b, prompts, group=2)
    assert torch.allclose(whole.losses, grouped.losses, atol=1e-4)
    assert torch.equal(whole.tokens, grouped.tokens) and whole.first == grouped.first
