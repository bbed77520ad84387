"""Fuser training on a frozen backbone: every objective runs and moves only the fuser; a residual
fuser starts as the text-only demonstration; resuming gives the weights of an uninterrupted run;
any record dataset serves as training sequences."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import aim
from aim.errors import AimError
from aim.fusion import TRAINED_FUSER, Fuser
from aim.fusion import train as training
from aim.training import sequences


@pytest.fixture(scope="module")
def backbone(tiny_hf_folders, single_thread_torch):
    return aim.load_backbone(tiny_hf_folders("llava"))


@pytest.fixture(scope="module")
def dataset(tiny_pool):
    return tiny_pool


def fusion(**kw):
    """The trained-fuser recipe at the tiny model's last layer, with ``kw`` changed."""
    return dataclasses.replace(TRAINED_FUSER, **dict(dict(layer=-1), **kw))


def config(out, dataset, fusion_kw=None, **kw):
    base = dict(out=str(out), data=dataset, steps=3, batch_size=2, grad_accum=2, max_shots=3,
                val_examples=2, eval_every=3, save_every=2, log_every=1, warmup=1, lr=1e-2, align=8)
    base.update(kw)
    return training.FuserTrainConfig(fusion=fusion(**(fusion_kw or {})), **base)


@pytest.mark.parametrize("objective", ["lm", "distill", "both"])
def test_objectives_train_only_the_fuser(backbone, dataset, tmp_path, objective):
    before = {n: p.clone() for n, p in backbone.decoder.named_parameters()}
    out = training.train_fuser(backbone, config(tmp_path, dataset, objective=objective))
    fuser = Fuser.from_pretrained(out, backbone=backbone)
    assert fuser.config.training["objective"] == objective and fuser.config.residual
    assert fuser.config.training["aligned_start"]["align_demos"] == 8
    assert fuser.proj.weight.abs().sum() > 0  # moved off its zero start
    assert all(torch.equal(p, before[n]) for n, p in backbone.decoder.named_parameters())
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert log[0] == {"step": 0, **{k: log[0][k] for k in log[0] if k.startswith("align_")}}
    assert log[0]["align_demos"] == 8 and log[1]["step"] == 0 and "val_loss" in log[1] and "val_loss" in log[-1]
    assert os.path.isfile(os.path.join(out, "loss.png"))


def test_untrained_residual_fuser_is_the_text_demo(backbone):
    cfg = training.FuserTrainConfig(fusion=fusion())
    fuser = Fuser.for_backbone(backbone, cfg.fusion)
    demo = aim.Demo(Image.new("RGB", (28, 28), "red"), "what colour?", "red")
    fused = fuser.fuse_demos(backbone, [demo])[0]
    assert torch.equal(fused, backbone.embed_tokens(backbone.demo_token_ids(demo)))
    norm = float(backbone.input_embeddings.weight.norm(dim=-1).mean())  # target_norm "embeddings", measured
    assert fuser.config.target_norm == pytest.approx(norm)
    assert cfg.fusion.target_norm == "embeddings" and cfg.fusion.hidden_size is None  # the config stays unbound


def test_aligned_start_fits_the_demos_own_image_embeddings(backbone, dataset):
    from aim.fusion import pool_tokens
    from aim.fusion.align import align_fuser

    fuser = Fuser.for_backbone(backbone, fusion(residual_tokens=2))
    source = sequences.RecordSequences(dataset, max_shots=3)
    demos = training.align_demos(source, training.FuserTrainConfig(align=24, fusion=fusion()))
    assert len(demos) == 24 and all(d.image is not None for d in demos)
    states = backbone.read_demos(demos, layer=-1)
    target = torch.cat([pool_tokens(e.float(), 2) for e in backbone.image_embeddings([d.image for d in demos])])
    texts = [backbone.embed_tokens(s.token_ids) for s in states]

    def squared_error():
        with torch.no_grad():
            fused = fuser.forward_batch(states, backbone.embed_tokens)
        added = torch.cat([f[:2] - t[:2] for f, t in zip(fused, texts)])
        return float((added - target).pow(2).sum()), fused

    before, _ = squared_error()
    stats = align_fuser(backbone, fuser, demos, ridge=1e-4)
    after, fused = squared_error()
    assert stats["align_demos"] == 24 and stats["align_rows"] == 48
    assert after < 0.5 * before  # least squares beats the zero start (which adds nothing)
    assert stats["align_r2"] > 0
    for f, t in zip(fused, texts):  # past the first two tokens: the text demonstration, untouched
        assert torch.equal(f[2:], t[2:])
    with pytest.raises(AimError, match="residual linear"):
        align_fuser(backbone, Fuser.for_backbone(backbone, fusion(kind="mlp")), demos)
    with pytest.raises(AimError, match="--align 0"):
        training.FuserTrainConfig(fusion=fusion(kind="mlp"), align=16)


def test_resume_gives_the_same_fuser(backbone, dataset, tmp_path, interrupt_after):
    straight = Fuser.from_pretrained(training.train_fuser(backbone, config(tmp_path / "a", dataset)))
    restore = interrupt_after(2)
    with pytest.raises(KeyboardInterrupt):
        training.train_fuser(backbone, config(tmp_path / "b", dataset))
    restore()
    state = load_file(str(tmp_path / "b" / "state" / "model.safetensors"))
    assert set(state) == {"fuser.proj.weight", "fuser.proj.bias"}  # a resume point holds what trains
    resumed = Fuser.from_pretrained(training.train_fuser(backbone, config(tmp_path / "b", dataset)))
    for key, value in straight.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key


def test_bad_settings_are_clear(backbone, dataset, tmp_path):
    with pytest.raises(AimError, match="objective"):
        training.FuserTrainConfig(objective="mse")
    with pytest.raises(AimError, match="fewer than max_shots"):
        sequences.sequence_source(dataset, backbone, seed=0, max_shots=20)
    with pytest.raises(AimError, match="multiple of --grad-accum"):
        config(tmp_path, dataset, batch_size=3, grad_accum=2)


def test_a_backbone_without_its_own_sequences_needs_data(backbone):
    with pytest.raises(AimError, match="brings no training sequences of its own: pass --data"):
        sequences.sequence_source(None, backbone, seed=0, max_shots=3)


def write_documents(folder, rows):
    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_interleaved_documents_train_a_fuser(backbone, tmp_path):
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    docs = [{"images": ["im0.png", None, None, "im1.png", None], "texts": [None, "A red box.", "More text.", None,
                                                                           "A cat."]},
            {"images": [None, "im2.png", None, "im3.png", None], "texts": ["Intro.", None, "Sea.", None, "Sky."]},
            {"images": ["im0.png", None], "texts": [None, "One pair only: dropped."]}]
    path = write_documents(tmp_path, docs)
    from aim.data.documents import load_documents

    loaded = load_documents(path)
    assert [[t for _, t in d] for d in loaded] == [["A red box.", "A cat."], ["Sea.", "Sky."]]
    assert loaded[0][0][0] == str(tmp_path / "im0.png")
    source = sequences.sequence_source(path, backbone, seed=0, max_shots=3)
    seq = source.sample(np.random.default_rng(0))
    assert len(seq.demos) == 1 and seq.target in ("A cat.", "Sky.") and seq.question == sequences.DOCUMENT_QUESTION
    out = training.train_fuser(backbone, config(tmp_path / "run", path, steps=2, eval_every=2))
    assert "interleaved documents" in Fuser.from_pretrained(out).config.training["data"]


def test_documents_with_misaligned_lists_are_an_error(tmp_path):
    from aim.data.documents import load_documents

    path = write_documents(tmp_path, [{"images": ["a.png", None], "texts": [None]}])
    with pytest.raises(AimError, match=r"docs.jsonl, document 0: .*aligned 'images' and 'texts'"):
        load_documents(path)


def test_documents_with_a_broken_line_name_it(tmp_path):
    from aim.data.documents import load_documents

    path = tmp_path / "docs.jsonl"
    path.write_text('{"images": ["a.png", null], "texts": [null, "x"]}\n{"images": [\n')
    with pytest.raises(AimError, match=r"docs.jsonl, document 1: not a JSON object"):
        load_documents(str(path))


def test_align_data_supplies_half_of_the_aligned_start(backbone, dataset, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    rows = []
    for i in range(6):  # a second image domain: flat grey squares, a question the pool never asks
        Image.new("RGB", (28, 28), (40 * i,) * 3).save(other / f"g{i}.png")
        rows.append({"question_id": f"g{i}", "image": f"g{i}.png", "question": "how bright?", "answers": [str(i)]})
    (other / "grey.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = str(other / "grey.jsonl")
    source = sequences.RecordSequences(dataset, max_shots=3)
    demos = training.align_demos(source, training.FuserTrainConfig(align=10, fusion=fusion(), align_data=spec))
    assert len(demos) == 10
    assert [d.question for d in demos].count("how bright?") == 5  # half from --align-data
    assert [d.question for d in demos[:5]] == ["what colour?"] * 5  # the rest from the training data
    out = training.train_fuser(backbone, config(tmp_path / "run", dataset, steps=0, align=10, align_data=spec))
    fuser = Fuser.from_pretrained(out, backbone=backbone)
    assert fuser.config.training["config"]["align_data"] == spec
    assert fuser.config.training["aligned_start"]["align_demos"] == 10
    with pytest.raises(AimError, match="--align-data .* needs the aligned start"):
        training.FuserTrainConfig(align=0, align_data=spec)


def test_prepend_mode_trains_and_writes_its_tokens_ahead(backbone, dataset, tmp_path):
    out = training.train_fuser(backbone, config(tmp_path, dataset, steps=2,
                                                fusion_kw=dict(residual_tokens=2, residual_mode="prepend")))
    fuser = Fuser.from_pretrained(out, backbone=backbone)
    assert fuser.config.residual_mode == "prepend" and fuser.config.residual_tokens == 2
    demo = aim.Demo(Image.new("RGB", (28, 28), "red"), "what colour?", "red")
    text = backbone.embed_tokens(backbone.demo_token_ids(demo))
    fused = fuser.fuse_demos(backbone, [demo])[0]
    assert fused.shape[0] == text.shape[0] + 2 and torch.equal(fused[2:], text)
    assert fused[:2].norm(dim=-1).min() > 0  # the aligned start wrote something there
    with pytest.raises(AimError, match="residual_mode='prepend' needs residual_tokens"):
        fusion(residual_tokens=None, residual_mode="prepend")
