"""Vector methods (aim/vectors): LIVE-style per-layer shift vectors act through forward hooks on any
backbone's decoder layers, leave it unchanged when removed, answer exactly as zero-shot when zero,
round-trip through their folder, refuse another backbone and train on the shared loop."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import aim
from aim.errors import ConfigError, VectorMismatchError
from aim.vectors import LiveVectors, VectorConfig, VectorTrainConfig, decoder_layers, load_vectors, train_vectors


@pytest.fixture(scope="module")
def backbone(tiny_hf_folders, single_thread_torch):
    return aim.load_backbone(tiny_hf_folders("llava"))


def query(backbone, tiny_images):
    return backbone.zero_shot_prompts(tiny_images[:2], ["what is it?", "which colour?"])


def assert_same_answers(backbone, a, b, tiny_images):
    """Two vector modules give the backbone the same next-token logits, bit for bit."""
    batch = query(backbone, tiny_images)
    with a.attached(backbone):
        first = backbone.next_token_logits(batch)
    with b.attached(backbone):
        assert torch.equal(first, backbone.next_token_logits(batch))


def live(backbone, scale=1.0, seed=0):
    torch.manual_seed(seed)
    vectors = LiveVectors.for_backbone(backbone, VectorConfig(init_std=scale, alpha_init=1.0))
    return vectors


def test_every_family_exposes_its_llm_layers(tiny_hf_backbone, tiny_images):
    layers = decoder_layers(tiny_hf_backbone)
    assert len(layers) == 2  # the tiny language models' num_hidden_layers (vision towers have their own)
    batch = query(tiny_hf_backbone, tiny_images)
    plain = tiny_hf_backbone.next_token_logits(batch)
    with live(tiny_hf_backbone).attached(tiny_hf_backbone):
        shifted = tiny_hf_backbone.next_token_logits(batch)
    assert not torch.allclose(plain, shifted)
    assert torch.equal(plain, tiny_hf_backbone.next_token_logits(batch))  # hooks gone


def test_removed_hooks_leave_the_model_unchanged_even_after_an_error(backbone, tiny_images):
    batch = query(backbone, tiny_images)
    before = backbone.next_token_logits(batch)
    vectors = live(backbone)
    with pytest.raises(RuntimeError, match="stop"):
        with vectors.attached(backbone):
            raise RuntimeError("stop")
    assert torch.equal(before, backbone.next_token_logits(batch))
    assert all(not layer._forward_hooks for layer in decoder_layers(backbone))


def test_zero_vectors_answer_exactly_as_zero_shot(backbone, tiny_images):
    batch = query(backbone, tiny_images)
    vectors = live(backbone, scale=0.0)
    assert not vectors.vectors.any()
    plain_logits, plain = backbone.next_token_logits(batch), backbone.generate(batch, max_new_tokens=6)
    with vectors.attached(backbone):
        assert torch.equal(plain_logits, backbone.next_token_logits(batch))
        assert backbone.generate(batch, max_new_tokens=6) == plain
    vectors.alpha.data.zero_()  # a zero weight on non-zero vectors is zero too
    vectors.vectors.data.normal_()
    with vectors.attached(backbone):
        assert torch.equal(plain_logits, backbone.next_token_logits(batch))


def test_the_shift_keeps_each_state_norm(backbone):
    vectors = live(backbone)
    h = torch.randn(2, 5, backbone.hidden_size)
    out = vectors.shift(0, h)
    assert torch.allclose(out.norm(dim=-1), h.norm(dim=-1), rtol=1e-5)
    assert not torch.allclose(out, h)


def test_save_and_load_round_trip(backbone, tiny_images, tmp_path):
    vectors = live(backbone)
    vectors.save_pretrained(str(tmp_path / "v"))
    config = json.loads((tmp_path / "v" / "vector_config.json").read_text())
    assert config["method"] == "live" and config["backbone"]["model"] == backbone.model_id
    loaded = load_vectors(str(tmp_path / "v"), backbone)
    assert isinstance(loaded, LiveVectors)
    assert torch.equal(loaded.vectors, vectors.vectors) and torch.equal(loaded.alpha, vectors.alpha)
    assert_same_answers(backbone, vectors, loaded, tiny_images)


def test_another_backbone_is_refused(backbone, tiny_hf_folders, tmp_path):
    live(backbone).save_pretrained(str(tmp_path / "v"))
    other = aim.load_backbone(tiny_hf_folders("qwen2_vl"))
    with pytest.raises(VectorMismatchError, match="made for backbone llava.*this backbone is qwen2_vl"):
        load_vectors(str(tmp_path / "v"), other)


def test_bad_folders_and_configs_are_clear(backbone, tmp_path):
    with pytest.raises(aim.errors.AimError, match="does not exist.*aim train vectors"):
        load_vectors(str(tmp_path / "nowhere"))
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "vector_config.json").write_text(json.dumps({"method": "mystery"}))
    with pytest.raises(aim.errors.AimError, match="unknown method 'mystery'"):
        load_vectors(str(tmp_path / "v"))
    with pytest.raises(ConfigError, match="not bound to a backbone"):
        LiveVectors(VectorConfig())
    with pytest.raises(ConfigError, match="--shots must be >= 1"):
        VectorTrainConfig(shots=0)


def config(out, data, **kw):
    base = dict(out=str(out), data=data, steps=3, batch_size=2, grad_accum=1, shots=3, val_examples=2,
                eval_every=3, save_every=2, log_every=1, warmup=1, lr=1e-2)
    base.update(kw)
    return VectorTrainConfig(**base)


def test_training_moves_only_the_vectors_and_records_how(backbone, tiny_pool, tmp_path):
    before = {n: p.clone() for n, p in backbone.decoder.named_parameters()}
    from accelerate.utils import set_seed

    set_seed(0)  # the trainer's seed: its starting vectors
    start = LiveVectors.for_backbone(backbone)
    out = train_vectors(backbone, config(tmp_path, tiny_pool))
    vectors = load_vectors(out, backbone)
    assert not torch.equal(vectors.vectors, start.vectors)
    assert not torch.equal(vectors.alpha, start.alpha) and torch.all(start.alpha == 0.1)  # the weights trained too
    assert vectors.config.training["shots"] == 3 and "3-3 demonstrations" in vectors.config.training["data"]
    assert vectors.config.training["examples_read"] == 3 * 2 * (3 + 1)  # steps x batch x (shots + query)
    assert all(torch.equal(p, before[n]) for n, p in backbone.decoder.named_parameters())
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert [r["step"] for r in log if "val_loss" in r] == [0, 3]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)


def test_resume_gives_the_same_vectors(backbone, tiny_pool, tmp_path, interrupt_after):
    whole = load_vectors(train_vectors(backbone, config(tmp_path / "whole", tiny_pool)), backbone)
    restore = interrupt_after(2)
    with pytest.raises(KeyboardInterrupt):
        train_vectors(backbone, config(tmp_path / "cut", tiny_pool))
    restore()
    resumed = load_vectors(train_vectors(backbone, config(tmp_path / "cut", tiny_pool)), backbone)
    assert torch.allclose(whole.vectors, resumed.vectors, atol=1e-6)
    assert torch.allclose(whole.alpha, resumed.alpha, atol=1e-6)


def test_ce_only_training_needs_no_teacher(backbone, tiny_pool, tmp_path):
    out = train_vectors(backbone, config(tmp_path, tiny_pool, kl_weight=0.0, steps=2, eval_every=2))
    assert "0.0 x T^2 KL" in load_vectors(out, backbone).config.training["objective"]


# ------------------------------------------------------------------ as a method of icl-eval and FewShot
def eval_config(**kw):
    from aim.eval.config import IclEvalConfig

    base = dict(dataset="tiny", methods=("zero", "live"), shots=(0, 2), seeds=(0, 1), batch_size=3, max_new_tokens=3)
    return IclEvalConfig(**dict(base, **kw))


def test_live_runs_once_on_the_zero_shot_prompt(backbone, tiny_pool, tmp_path):
    from aim.data.spec import load_records
    from aim.eval.runner import icl_eval

    records = load_records(tiny_pool)[:5]
    zero = live(backbone, scale=0.0)
    doc = icl_eval(backbone, records, eval_config(), str(tmp_path), run_id="zero-vectors", progress=False,
                   vectors={"live": zero})
    rows = doc["results"]["tiny"]
    assert rows["live"]["2"]["same_as"] == "live/0" and "same_as" not in rows["live"]["0"]
    for k in ("0", "2"):  # zero vectors: the zero-shot answers, at the zero-shot prompt's cost
        assert rows["live"][k]["accuracy"]["mean"] == rows["zero"][k]["accuracy"]["mean"]
        assert rows["live"][k]["prompt_tokens"] == rows["zero"][k]["prompt_tokens"]
    samples = [json.loads(line) for line in open(doc["files"]["samples"])]
    by = {(s["method"], s["id"]): s["prediction"] for s in samples}
    assert {s["method"] for s in samples} == {"zero", "live"} and len(samples) == 10  # one cell each
    assert all(by["live", str(r.id)] == by["zero", str(r.id)] for r in records)
    assert doc["configuration"]["vectors"]["live"]["method"] == "live"


def test_icl_eval_asks_for_the_vectors_it_needs(backbone, tiny_pool, tmp_path):
    from aim.data.spec import load_records
    from aim.eval.runner import IclEval

    records = load_records(tiny_pool)[:2]
    with pytest.raises(aim.errors.AimError, match="method live needs its vectors: pass --vectors"):
        IclEval(backbone, records, eval_config(), str(tmp_path))
    with pytest.raises(aim.errors.AimError, match="holds live vectors but --methods does not list live"):
        IclEval(backbone, records, eval_config(methods=("zero",)), str(tmp_path), vectors={"live": live(backbone)})


def test_fewshot_answers_with_vectors(backbone, tiny_images, tmp_path):
    fs = aim.FewShot(backbone, None)
    with pytest.raises(aim.errors.AimError, match="call use_vectors"):
        fs.generate(tiny_images[:2], ["a?", "b?"], method="live")
    live(backbone, scale=0.0).save_pretrained(str(tmp_path / "zero"))
    fs.use_vectors(str(tmp_path / "zero"))
    answers = fs.generate(tiny_images[:2], ["a?", "b?"], method="live", max_new_tokens=4)
    plain = backbone.generate(backbone.zero_shot_prompts(tiny_images[:2], ["a?", "b?"]), max_new_tokens=4)
    assert [a.text for a in answers] == [g.text for g in plain] and all(a.demo_ids == [] for a in answers)


def test_the_command_line_trains_and_evaluates_vectors(tiny_hf_folders, tiny_pool, tmp_path):
    from click.testing import CliRunner

    from aim.cli import cli

    folder = tiny_hf_folders("llava")
    result = CliRunner().invoke(cli, ["train", "vectors", "--backbone", folder, "--data", tiny_pool, "--shots", "2",
                                      "--steps", "2", "--batch-size", "2", "--eval-every", "2",
                                      "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "v" / "vector_model.safetensors").is_file()
    args = ["icl-eval", "--backbone", folder, "--dataset", tiny_pool, "--limit", "3", "--methods", "zero,live",
            "--vectors", str(tmp_path / "v"), "--shots", "0,2", "--seeds", "0", "--max-new-tokens", "2",
            "--output", str(tmp_path / "eval"), "--run-id", "cli", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "| live |" in result.output
    result = CliRunner().invoke(cli, args[:args.index("--vectors")] + args[args.index("--vectors") + 2:])
    assert result.exit_code != 0 and "needs its vectors" in str(result.exception or result.output)


# ------------------------------------------------------------------ MTV-style task vectors
def mtv(backbone, chosen=None, seed=0):
    from aim.vectors import TaskVectors

    torch.manual_seed(seed)
    vectors = TaskVectors.for_backbone(backbone, VectorConfig(method="mtv"))
    vectors.means.normal_()
    if chosen is not None:
        vectors.chosen.copy_(chosen)
    return vectors


def test_mtv_patches_only_the_chosen_heads_at_the_last_position(backbone, tiny_images):
    from aim.vectors.hooks import attention_heads, head_outputs

    heads, dim = attention_heads(backbone)
    assert (heads, dim) == (4, 16)  # the tiny text model: hidden 64, 4 heads
    batch = query(backbone, tiny_images)
    plain_logits, plain = backbone.next_token_logits(batch), backbone.generate(batch, max_new_tokens=5)
    none = mtv(backbone)  # no head chosen: untouched, exactly
    with none.attached(backbone):
        assert torch.equal(plain_logits, backbone.next_token_logits(batch))
        assert backbone.generate(batch, max_new_tokens=5) == plain
    chosen = torch.zeros(2, 4)
    chosen[1, 2] = 1
    one = mtv(backbone, chosen)
    seen = {}
    proj = head_outputs(backbone)[1]
    with one.attached(backbone):
        handle = proj.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].clone()))  # after ours
        patched_logits = backbone.next_token_logits(batch)
    handle.remove()
    x = seen["x"].reshape(*seen["x"].shape[:2], 4, 16)
    assert torch.equal(x[:, -1, 2], one.means[1, 2].expand(2, 16))  # the chosen head, last position: its mean
    assert not torch.allclose(plain_logits, patched_logits)
    seen.clear()
    handle = proj.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].clone()))
    backbone.next_token_logits(batch)
    handle.remove()
    y = seen["x"].reshape(*seen["x"].shape[:2], 4, 16)
    assert torch.equal(x[:, :-1], y[:, :-1]) and torch.equal(x[:, -1, [0, 1, 3]], y[:, -1, [0, 1, 3]])


def test_mean_head_outputs_average_the_last_positions(backbone, tiny_pool):
    from aim.training.sequences import RecordSequences
    from aim.vectors.mtv import mean_head_outputs

    source = RecordSequences(tiny_pool, 2, min_shots=2)
    seqs = [source.sample(np.random.default_rng(i)) for i in range(3)]
    vectors = mtv(backbone)
    together = mean_head_outputs(backbone, vectors, seqs, batch_size=3)
    alone = torch.stack([mean_head_outputs(backbone, vectors, [s]) for s in seqs]).mean(0)
    assert together.shape == (2, 4, 16) and torch.allclose(together, alone, atol=1e-5)  # left padding changes nothing


def test_mtv_search_trains_only_the_choice_and_round_trips(backbone, tiny_pool, tmp_path, tiny_images):
    before = {n: p.clone() for n, p in backbone.decoder.named_parameters()}
    out = train_vectors(backbone, config(tmp_path, tiny_pool, vector=VectorConfig(method="mtv"), shots=2,
                                         mean_prompts=3, samples=4, candidates=2, lr=None))
    vectors = load_vectors(out, backbone)
    record = vectors.config.training
    assert record["config"]["lr"] == 0.1 and record["mean_prompts"] == 3
    assert record["heads_chosen"] == int(vectors.chosen.sum()) and record["of_heads"] == 8
    assert len(record["candidate_losses"]) == 3 and record["held_out_first_token_loss"] == min(record["candidate_losses"])
    assert not torch.equal(vectors.logits, torch.full_like(vectors.logits, -1.0))  # the search moved it
    assert vectors.means.abs().sum() > 0
    assert all(torch.equal(p, before[n]) for n, p in backbone.decoder.named_parameters())
    assert_same_answers(backbone, vectors, load_vectors(out, backbone), tiny_images)


def test_mtv_in_icl_eval_beside_live(backbone, tiny_pool, tmp_path):
    from aim.data.spec import load_records
    from aim.eval.runner import icl_eval

    chosen = torch.zeros(2, 4)
    chosen[0, 1] = 1
    doc = icl_eval(backbone, load_records(tiny_pool)[:3], eval_config(methods=("zero", "live", "mtv")), str(tmp_path),
                   run_id="both", progress=False, vectors={"live": live(backbone), "mtv": mtv(backbone, chosen)})
    rows = doc["results"]["tiny"]
    assert set(rows) == {"zero", "live", "mtv"} and rows["mtv"]["2"]["same_as"] == "mtv/0"
    assert rows["mtv"]["0"]["prompt_tokens"] == rows["zero"]["0"]["prompt_tokens"]


# ------------------------------------------------------------------ MimIC-style head shifts
def mimic(backbone, scale=1.0, seed=0):
    from aim.vectors import HeadShifts

    torch.manual_seed(seed)
    shifts = HeadShifts.for_backbone(backbone, VectorConfig(method="mimic"))
    shifts.shifts.data.normal_(0, scale)
    return shifts


def test_mimic_shifts_every_family_and_put_the_interface_back(tiny_hf_backbone, tiny_images):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    before = dict(ALL_ATTENTION_FUNCTIONS._local_mapping)
    batch = query(tiny_hf_backbone, tiny_images)
    plain = tiny_hf_backbone.next_token_logits(batch)
    with mimic(tiny_hf_backbone).attached(tiny_hf_backbone):
        shifted = tiny_hf_backbone.next_token_logits(batch)
    assert not torch.allclose(plain, shifted)
    assert ALL_ATTENTION_FUNCTIONS._local_mapping == before
    assert torch.equal(plain, tiny_hf_backbone.next_token_logits(batch))
    with mimic(tiny_hf_backbone, scale=0.0).attached(tiny_hf_backbone):  # zero shifts: exactly zero-shot
        assert torch.equal(plain, tiny_hf_backbone.next_token_logits(batch))


def test_mimic_magnitude_reads_the_real_attention_mask(backbone, tiny_images):
    """A prompt alone (no padding: causal attention without a mask) and the same prompt left-padded in a
    batch (a boolean mask) get the same shifted answer, so the query's normaliser Z_Q sees exactly
    the keys the model attends to."""
    shifts = mimic(backbone, scale=0.5)
    short = backbone.zero_shot_prompts(tiny_images[2:3], ["which?"])
    both = backbone.zero_shot_prompts([tiny_images[2], tiny_images[3]], ["which?", "a much longer question here?"])
    with shifts.attached(backbone):
        alone, padded = backbone.next_token_logits(short), backbone.next_token_logits(both)
        padded_answer = backbone.generate(both, max_new_tokens=4)[0].text
        alone_answer = backbone.generate(short, max_new_tokens=4)[0].text
    assert torch.allclose(alone[0], padded[0], atol=1e-4)
    assert padded_answer == alone_answer  # the cached steps too (one query position against all keys)


def test_mimic_trains_its_shifts_only_and_round_trips(backbone, tiny_pool, tmp_path, tiny_images):
    before = {n: p.clone() for n, p in backbone.decoder.named_parameters()}
    out = train_vectors(backbone, config(tmp_path, tiny_pool, vector=VectorConfig(method="mimic"), shots=2, lr=None))
    shifts = load_vectors(out, backbone)
    record = shifts.config.training
    assert record["config"]["lr"] == 5e-3 and "layer-wise alignment" in record["objective"]
    assert record["trainable_parameters"] == 2 * 4 * 16 * 2 + 2 * 4  # shifts + magnitude weights and biases
    assert all(torch.equal(p, before[n]) for n, p in backbone.decoder.named_parameters())
    assert_same_answers(backbone, shifts, load_vectors(out, backbone), tiny_images)


def test_all_three_on_the_pocket_backbone(single_thread_torch):
    """The embedded default: 30 SmolLM2 layers, 9 heads of 64; each method changes the next token's
    logits while attached and nothing after; at zero it changes nothing."""
    from aim.vectors import HeadShifts, TaskVectors
    from aim.vectors.hooks import attention_heads

    pocket = aim.load_backbone("pocket")
    assert len(decoder_layers(pocket)) == 30 and attention_heads(pocket) == (9, 64)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    batch = pocket.zero_shot_prompts([image], ["What is this?"])
    plain = pocket.next_token_logits(batch)
    for cls, method in ((LiveVectors, "live"), (HeadShifts, "mimic"), (TaskVectors, "mtv")):
        torch.manual_seed(0)
        vectors = cls.for_backbone(pocket, VectorConfig(method=method, alpha_init=1.0, init_std=0.5))
        if method == "mimic":
            vectors.shifts.data.normal_()
        if method == "mtv":
            vectors.means.normal_()
            vectors.chosen[10:20] = 1
        with vectors.attached(pocket):
            assert not torch.allclose(plain, pocket.next_token_logits(batch), atol=1e-3), method
        for p in vectors.parameters():
            p.data.zero_()
        if method == "mtv":
            vectors.chosen.zero_()
        with vectors.attached(pocket):
            assert torch.equal(plain, pocket.next_token_logits(batch)), method
    assert torch.equal(plain, pocket.next_token_logits(batch))


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="Fashion-MNIST not installed")
def test_binding_episodes_train_with_their_own_demonstrations(tmp_path):
    from aim.data.binding import binding_records
    from aim.training.sequences import EpisodeSequences

    records = binding_records("test", ways=2, n=3, seed=0, max_shots=4)
    for record in records:
        source = EpisodeSequences("fashion-mnist-binding-2way:test", [record], max_shots=4, min_shots=2)
        words = set(record.extra["episode"]["words"])
        for i in range(4):
            seq = source.sample(np.random.default_rng(i))
            assert 2 <= len(seq.demos) <= 4 and seq.target == record.answer
            assert {d.answer for d in seq.demos} <= words  # the query's own episode binds its words


# ------------------------------------------------------------------ AIM's label-free fit on the pool
def test_a_fuser_fitted_on_the_pool_it_compresses(backbone, tiny_hf_folders, tiny_pool, tmp_path):
    import dataclasses

    from click.testing import CliRunner

    from aim.bank import DemoBank
    from aim.cli import cli
    from aim.data.spec import load_records
    from aim.fusion import TRAINED_FUSER, Fuser
    from aim.fusion.pool_fit import fit_on_pool

    fuser = Fuser.for_backbone(backbone, dataclasses.replace(TRAINED_FUSER, layer=-1))
    fuser.save_pretrained(str(tmp_path / "fuser"))
    refit = fit_on_pool(backbone, fuser, load_records(tiny_pool), demos=8)
    assert refit.config.training["pool_demos"] == 8 and refit.config.training["own_demos"] == 0  # llava: none of its own
    assert refit.proj.weight.abs().sum() > 0 and refit.fingerprint() != fuser.fingerprint()

    args = ["compress-demos", "--backbone", tiny_hf_folders("llava"), "--fuser", str(tmp_path / "fuser"), "--dataset",
            tiny_pool, "--out", str(tmp_path / "bank"), "--fit-on-pool", "8"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    saved = Fuser.from_pretrained(str(tmp_path / "bank" / "fuser"), backbone=backbone)
    assert torch.equal(saved.proj.weight, refit.proj.weight)  # the same seeded fit
    bank = DemoBank.open(str(tmp_path / "bank"), backbone=backbone.fingerprint(layer=-1), fuser=saved.fingerprint())
    assert len(bank) == 12
    again = CliRunner().invoke(cli, args)  # a rerun finds the bank complete and its fuser in place
    assert again.exit_code == 0, again.output

    identity = CliRunner().invoke(cli, args[:4] + ["identity"] + args[5:8] + [str(tmp_path / "other")] + args[9:])
    assert identity.exit_code != 0 and "needs a residual linear fuser" in str(identity.exception)


def test_mtv_search_scores_each_row_with_its_own_choice(backbone, tiny_pool):
    import torch.nn.functional as F

    from aim.training.sequences import RecordSequences
    from aim.vectors.mtv import HeadSearch

    chosen = torch.zeros(2, 4)
    chosen[1] = 1
    vectors = mtv(backbone)
    seq = RecordSequences(tiny_pool, 1).sample(np.random.default_rng(0))
    ce, _ = HeadSearch(backbone, vectors, samples=2).first_token_losses(seq, torch.stack([torch.zeros(2, 4), chosen]))
    plain = backbone.next_token_logits(backbone.encode([backbone.query_body(seq.image, seq.question)]))
    target = backbone.tokenizer(backbone.continuation_text(seq.target), add_special_tokens=False).input_ids[0]
    assert torch.allclose(ce[0], F.cross_entropy(plain, torch.tensor([target])), atol=1e-5)  # no head: untouched
    with mtv(backbone, chosen).attached(backbone):
        patched = backbone.next_token_logits(backbone.encode([backbone.query_body(seq.image, seq.question)]))
    assert torch.allclose(ce[1], F.cross_entropy(patched, torch.tensor([target])), atol=1e-5)
