"""The fuser (aim/fusion.py) on a tiny fake backbone: shapes of every kind and option, exact
starting points (identity, untrained residual), save/load, refusal of another backbone, config checks."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from aim.backbones import Demo, DemoStates
from aim.errors import AimError, FusionMismatchError
from aim.fingerprints import differences
from aim.fusion import CONFIG_NAME, WEIGHTS_NAME, FusionConfig, Fuser, identity_fuser

H = 16


@pytest.fixture(autouse=True)
def _one_thread(single_thread_torch):
    torch.manual_seed(0)


class FakeBackbone:
    """What the fuser needs from a backbone: read_demos, embed_tokens, fingerprint, hidden_size.
    A demonstration's T tokens are one per word; its "hidden states" are a fixed random map of the
    token embeddings, about 15x their norm (like a real last layer)."""

    def __init__(self, model_id="fake/tiny", layer=-1, hidden=H):
        self.model_id, self.layer, self.hidden_size = model_id, layer, hidden
        g = torch.Generator().manual_seed(1)
        self.embedding = nn.Embedding(100, hidden)  # requires grad: the fuser must not train it
        self.mix = torch.randn(hidden, hidden, generator=g) * 15 / math.sqrt(hidden)
        self.read_layers = []

    def fingerprint(self, layer=None):
        return {"family": "fake", "model": self.model_id, "revision": None, "dtype": "float32",
                "hidden_size": self.hidden_size, "layer": self.layer if layer is None else layer}

    def embed_tokens(self, token_ids):
        return self.embedding(token_ids)

    @torch.no_grad()
    def read_demos(self, demos, layer=None):
        self.read_layers.append(layer)
        out = []
        for d in demos:
            ids = torch.tensor([sum(map(ord, w)) % 100 for w in f"{d.question} {d.answer}".split()])
            out.append(DemoStates(self.embedding(ids) @ self.mix, ids))
        return out


DEMOS = [Demo(None, "what colour is the square", "red"), Demo(None, "how many", "two"),
         Demo(None, "is the circle above or below the triangle in this image", "below")]
LENGTHS = [6, 3, 12]


@pytest.mark.parametrize("options", [
    {}, {"kind": "mlp"}, {"kind": "mlp", "mlp_ratio": 0.5}, {"residual": True},
    {"kind": "mlp", "residual": True}, {"normalize": "rms"}, {"normalize": "rms", "target_norm": 3.0},
    {"init": "default"}, {"layer": -3}, {"pool_tokens": 4}, {"pool_tokens": 4, "residual": True},
    {"residual": True, "residual_tokens": 2}, {"residual": True, "residual_tokens": 20},
    {"kind": "identity"}, {"kind": "identity", "pool_tokens": 4},
])
def test_shapes_of_every_kind_and_option(options):
    backbone = FakeBackbone()
    fuser = Fuser.for_backbone(backbone, **options)
    fused = fuser.fuse_demos(backbone, DEMOS)
    m = options.get("pool_tokens")
    assert [tuple(f.shape) for f in fused] == [(min(t, m) if m else t, H) for t in LENGTHS]
    assert all(not f.requires_grad and torch.isfinite(f).all() for f in fused)
    assert backbone.read_layers == [options.get("layer", -1)]
    # one demonstration at a time through forward gives what the batched path gives
    states = backbone.read_demos(DEMOS, layer=fuser.config.layer)
    for s, f in zip(states, fused):
        with torch.no_grad():
            alone = fuser(s.hidden, backbone.embed_tokens(s.token_ids))
        torch.testing.assert_close(alone, f)


def test_other_embed_size_and_pooling_averages():
    fuser = Fuser(FusionConfig(hidden_size=8, embed_size=5, pool_tokens=2))
    assert fuser(torch.randn(7, 8)).shape == (2, 5) and fuser(torch.randn(1, 8)).shape == (1, 5)
    ident = Fuser(FusionConfig(hidden_size=4, kind="identity", pool_tokens=2))
    text = torch.arange(16.0).reshape(4, 4)
    assert torch.equal(ident(torch.zeros(4, 4), text), torch.stack([text[:2].mean(0), text[2:].mean(0)]))


def test_untrained_residual_and_identity_return_text_embeddings_exactly():
    backbone = FakeBackbone()
    states = backbone.read_demos(DEMOS)
    texts = [backbone.embed_tokens(s.token_ids).detach() for s in states]
    for fuser in (Fuser.for_backbone(backbone, residual=True), Fuser.for_backbone(backbone, kind="mlp", residual=True),
                  Fuser.for_backbone(backbone, kind="identity"), identity_fuser(H)):
        for fused, text in zip(fuser.fuse_demos(backbone, DEMOS), texts):
            assert torch.equal(fused, text)


def test_residual_tokens_write_only_the_first_tokens():
    backbone = FakeBackbone()
    states = backbone.read_demos(DEMOS)
    texts = [backbone.embed_tokens(s.token_ids).detach() for s in states]
    fuser = Fuser.for_backbone(backbone, residual=True, residual_tokens=2, normalize="rms")
    for fused, text in zip(fuser.fuse_demos(backbone, DEMOS), texts):  # untrained: the text demo exactly
        assert torch.equal(fused, text)
    nn.init.normal_(fuser.proj.weight)
    everywhere = Fuser.for_backbone(backbone, residual=True, normalize="rms")
    everywhere.load_state_dict(fuser.state_dict())
    batch = fuser.fuse_demos(backbone, DEMOS)
    for i, (fused, full, text) in enumerate(zip(batch, everywhere.fuse_demos(backbone, DEMOS), texts)):
        assert fused.shape == text.shape  # one fused token per text token still
        assert torch.equal(fused[2:], text[2:])  # past the first two: the text embeddings, untouched
        torch.testing.assert_close(fused[:2], full[:2])  # the first two: as a fuser writing everywhere
        assert not torch.allclose(fused[:2], text[:2])
        torch.testing.assert_close(fuser(states[i].hidden, text), fused)  # one at a time = batched


def test_prepend_mode_puts_the_written_tokens_ahead_of_the_text():
    backbone = FakeBackbone()
    states = backbone.read_demos(DEMOS)
    texts = [backbone.embed_tokens(s.token_ids).detach() for s in states]
    added = Fuser.for_backbone(backbone, residual=True, residual_tokens=2, normalize="rms")
    nn.init.normal_(added.proj.weight)
    prepended = Fuser.for_backbone(backbone, residual=True, residual_tokens=2, residual_mode="prepend",
                                   normalize="rms")
    prepended.load_state_dict(added.state_dict())
    batch = prepended.fuse_demos(backbone, DEMOS)
    for i, (fused, summed, text) in enumerate(zip(batch, added.fuse_demos(backbone, DEMOS), texts)):
        assert fused.shape == (text.shape[0] + 2, H)  # two tokens more than the text
        assert torch.equal(fused[2:], text)  # the text embeddings whole, after them
        torch.testing.assert_close(fused[:2] + text[:2], summed[:2])  # the same projection add mode adds
        torch.testing.assert_close(prepended(states[i].hidden, text), fused)  # one at a time = batched
    with pytest.raises(ValueError, match="residual_mode"):
        FusionConfig(hidden_size=H, residual=True, residual_mode="prepend")  # needs residual_tokens
    with pytest.raises(ValueError, match="residual_mode"):
        FusionConfig(hidden_size=H, residual=True, residual_tokens=2, residual_mode="before")


def test_identity_init_and_rms_target_norm():
    backbone = FakeBackbone()
    fused = Fuser.for_backbone(backbone, normalize="rms", target_norm=3.0).fuse_demos(backbone, DEMOS)
    for f in fused:  # the identity start keeps the normalised states: every token has norm 3
        torch.testing.assert_close(f.norm(dim=-1), torch.full((f.shape[0],), 3.0))
    plain = Fuser.for_backbone(backbone, init_scale=0.5).fuse_demos(backbone, DEMOS)
    states = backbone.read_demos(DEMOS)
    torch.testing.assert_close(plain[0], 0.5 * states[0].hidden)
    unit = Fuser.for_backbone(backbone, normalize="rms").fuse_demos(backbone, DEMOS)[0]
    torch.testing.assert_close(unit.pow(2).mean(-1), torch.ones(LENGTHS[0]), rtol=1e-4, atol=1e-4)


def test_save_load_round_trip(tmp_path):
    backbone = FakeBackbone(layer=-2)
    for i, options in enumerate([{}, {"kind": "mlp", "residual": True, "normalize": "rms", "target_norm": 2.0},
                                 {"residual": True, "residual_tokens": 2},
                                 {"residual": True, "residual_tokens": 2, "residual_mode": "prepend"},
                                 {"pool_tokens": 3}, {"kind": "identity"}]):
        fuser = Fuser.for_backbone(backbone, **options)
        if fuser.proj is not None:  # train a little, so that the zero-initialised layer holds something
            nn.init.normal_(list(fuser.parameters())[-1])
        folder = tmp_path / f"fuser{i}"
        fuser.save_pretrained(str(folder))
        text = (folder / CONFIG_NAME).read_text()
        raw = json.loads(text)
        assert text.strip() == json.dumps(raw, indent=2, sort_keys=True)
        assert raw["backbone"] == backbone.fingerprint(layer=-2) and raw["layer"] == -2 and raw["hidden_size"] == H
        loaded = Fuser.from_pretrained(str(folder), backbone=backbone)
        assert loaded.config == fuser.config
        for a, b in zip(fuser.fuse_demos(backbone, DEMOS), loaded.fuse_demos(backbone, DEMOS)):
            assert torch.equal(a, b)


def test_mismatching_backbone_is_refused(tmp_path):
    Fuser.for_backbone(FakeBackbone(layer=-2)).save_pretrained(str(tmp_path))
    with pytest.raises(FusionMismatchError) as err:
        Fuser.from_pretrained(str(tmp_path), backbone=FakeBackbone(model_id="fake/other", layer=-2))
    message = str(err.value)
    assert str(tmp_path) in message and "aim train fuser" in message
    assert "fake/tiny" in message and "fake/other" in message and "differs in model" in message
    # the fuser also refuses it when asked to fuse, not only when loaded
    with pytest.raises(FusionMismatchError, match="fake/other"):
        Fuser.from_pretrained(str(tmp_path)).fuse_demos(FakeBackbone(model_id="fake/other"), DEMOS)
    # weights made at layer -2, config edited to read layer -5: refused, both layers named
    raw = json.loads((tmp_path / CONFIG_NAME).read_text())
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**raw, "layer": -5}))
    with pytest.raises(FusionMismatchError) as err:
        Fuser.from_pretrained(str(tmp_path), backbone=FakeBackbone(layer=-2))
    assert "layer -2" in str(err.value) and "layer -5" in str(err.value) and "differs in layer" in str(err.value)
    # no fingerprint recorded: at least the hidden size must agree
    fuser = Fuser(FusionConfig(hidden_size=H + 1))
    with pytest.raises(FusionMismatchError, match="hidden size 17"):
        fuser.fuse_demos(FakeBackbone(), DEMOS)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(AimError, match="does not exist"):
        Fuser.from_pretrained(str(tmp_path / "nowhere"))
    Fuser.for_backbone(FakeBackbone()).save_pretrained(str(tmp_path))
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        (tmp_path / name).unlink()
        with pytest.raises(AimError) as err:
            Fuser.from_pretrained(str(tmp_path))
        assert str(tmp_path) in str(err.value) and f"missing {name}" in str(err.value)


def test_gradients_reach_the_projection_only():
    backbone = FakeBackbone()
    for options in ({}, {"kind": "mlp", "residual": True, "normalize": "rms", "pool_tokens": 4}):
        fuser = Fuser.for_backbone(backbone, **options)
        backbone.embedding.zero_grad(set_to_none=True)
        fused = fuser.fuse_demos(backbone, DEMOS, grad=True)
        torch.cat(fused).pow(2).sum().backward()
        assert all(p.grad is not None for p in fuser.parameters())
        assert list(fuser.parameters())[-1].grad.abs().sum() > 0  # (a zero-started layer stops the rest)
        assert backbone.embedding.weight.grad is None
    assert list(identity_fuser(H).parameters()) == []


@pytest.mark.parametrize("options, field_name", [
    ({"pool_tokens": -1}, "pool_tokens"), ({"pool_tokens": 0}, "pool_tokens"), ({"kind": "conv"}, "kind"),
    ({"normalize": "layer"}, "normalize"), ({"init": "orthogonal"}, "init"), ({"hidden_size": 0}, "hidden_size"),
    ({"embed_size": -4}, "embed_size"), ({"mlp_ratio": 0}, "mlp_ratio"), ({"target_norm": 3.0}, "target_norm"),
    ({"normalize": "rms", "target_norm": -1.0}, "target_norm"), ({"kind": "identity", "residual": True}, "residual"),
    ({"residual_tokens": 4}, "residual_tokens"), ({"residual": True, "residual_tokens": 0}, "residual_tokens"),
])
def test_invalid_config_values_name_the_field(options, field_name):
    with pytest.raises(ValueError, match=field_name):
        FusionConfig(**{"hidden_size": H, **options})


def test_wrong_inputs_are_explained():
    fuser = Fuser(FusionConfig(hidden_size=H, residual=True))
    with pytest.raises(ValueError, match="text_embeds"):
        fuser(torch.randn(3, H))
    with pytest.raises(ValueError, match=r"\(tokens, 16\)"):
        fuser(torch.randn(3, H + 1), torch.randn(3, H))
    with pytest.raises(ValueError, match="embed_fn"):
        fuser.forward_batch(FakeBackbone().read_demos(DEMOS))


def test_same_weights_from_another_folder_are_the_same_backbone():
    """A pocket checkpoint copied to another folder keeps its weights' digest: fusers, vectors and banks
    made for it still fit. A hub model's revision is not a digest: another model id is another model."""
    pocket = {"family": "pocket", "model": "pocket:runs/a", "revision": "5e10+fc68", "dtype": "float32",
              "hidden_size": 576, "layer": 15}
    assert differences(pocket, {**pocket, "model": "pocket:checkpoints/next"}) == []
    assert differences(pocket, {**pocket, "model": "pocket:x", "revision": "5e10+0000"}) == ["model", "revision"]
    assert differences(pocket, {**pocket, "layer": 3}) == ["layer"]
    hub = {**pocket, "family": "llava", "model": "llava-hf/a", "revision": "main"}
    assert differences(hub, {**hub, "model": "llava-hf/b"}) == ["model"]
    assert differences({**pocket, "revision": None}, {**pocket, "revision": None, "model": "pocket:x"}) == ["model"]
