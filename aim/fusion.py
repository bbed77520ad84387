"""The fuser: a demonstration's hidden states at its text positions -> fused virtual tokens.

The backbone reads a demonstration (image + question + answer); its hidden states at the T text
positions, ``(T, hidden_size)``, have already attended to the image. The fuser maps them into the
LLM's input-embedding space, ``(T', embed_size)``, with T' = T (one fused token per text token, as in
the AIM paper) or T' = min(T, pool_tokens), plus m with ``residual_mode="prepend"``. On the way:
adaptive average pooling over the token axis (optional), RMS normalisation (optional), then the
projection, the only trained part. A residual fuser adds the demonstration's own text embeddings
(pooled alike) to a projection that starts at zero, or puts its first m rows ahead of them. Saved
in the peft manner: ``fusion_config.json`` + ``fusion_model.safetensors``.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, fields
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .checkpoint import save_checkpoint
from .errors import AimError, FusionMismatchError

logger = logging.getLogger(__name__)

CONFIG_NAME = "fusion_config.json"
WEIGHTS_NAME = "fusion_model.safetensors"
KINDS = ("linear", "mlp", "identity")
NORMALIZE = ("none", "rms")
RESIDUAL_MODES = ("add", "prepend")
INITS = ("identity", "default")
RMS_EPS = 1e-6


@dataclass
class FusionConfig:
    """How a fuser is shaped and which backbone it belongs to; saved as ``fusion_config.json``."""

    hidden_size: int = field(default=None, metadata={"help": "the backbone LLM's hidden size (required)"})
    embed_size: Optional[int] = field(default=None, metadata={
        "help": "the LLM's input-embedding size; None: same as hidden_size (true of every backbone we have)"})
    layer: int = field(default=-1, metadata={"help": "which layer's hidden states the fuser reads (-1: the last)"})
    kind: str = field(default="linear", metadata={
        "help": "linear: one linear projection (the AIM paper); mlp: Linear-GELU-Linear; "
                "identity: no fusion, the demonstration's own text embeddings"})
    mlp_ratio: float = field(default=1.0, metadata={"help": "mlp: inner width = mlp_ratio * embed_size"})
    residual: bool = field(default=False, metadata={
        "help": "fused = text embedding + projection(state), the projection's last layer starting at zero "
                "(an untrained residual fuser returns the text embeddings exactly)"})
    normalize: str = field(default="none", metadata={
        "help": "none, or rms: RMS-normalise each state (no learned scale) before the projection"})
    target_norm: Optional[float] = field(default=None, metadata={
        "help": "with normalize=rms: the L2 norm given to each normalised state, typically the norm of an "
                "input embedding (None: unit RMS)"})
    residual_tokens: Optional[int] = field(default=None, metadata={
        "help": "residual fusers: the projection is added to the first m fused tokens only, the rest stay the "
                "demonstration's text embeddings (None: every token). The pocket fuser writes its image "
                "summary into the first 4 tokens (docs/fuser-design.md)"})
    residual_mode: str = field(default="add", metadata={
        "help": "with residual_tokens m: add (the projection of the first m states is added onto the first m "
                "text embeddings; T' = T) or prepend (it becomes m fused tokens of their own ahead of the text "
                "embeddings; T' = T + m), the form in which oracle demonstrations of an unseen image domain "
                "bound labels best (docs/fuser-design.md)"})
    pool_tokens: Optional[int] = field(default=None, metadata={
        "help": "None: one fused token per text token; m: adaptive average pooling to m tokens "
                "(demonstrations shorter than m keep their T tokens)"})
    init: str = field(default="identity", metadata={
        "help": "identity: a linear fuser with hidden_size == embed_size starts as init_scale * I, bias 0 "
                "(other shapes fall back to default); default: PyTorch's initialisation"})
    init_scale: float = field(default=1.0, metadata={"help": "scale of the identity initialisation"})
    backbone: Optional[dict] = field(default=None, metadata={
        "help": "fingerprint of the backbone it was made for: family, model, revision, dtype, hidden_size, layer"})
    training: dict = field(default_factory=dict, metadata={"help": "what it was trained on, and how"})

    def __post_init__(self):
        def positive_int(name, value):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        positive_int("hidden_size", self.hidden_size)
        if self.embed_size is None:
            self.embed_size = self.hidden_size
        positive_int("embed_size", self.embed_size)
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise ValueError(f"layer must be an integer, got {self.layer!r}")
        for name, allowed in (("kind", KINDS), ("normalize", NORMALIZE), ("init", INITS),
                              ("residual_mode", RESIDUAL_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if self.pool_tokens is not None:
            positive_int("pool_tokens", self.pool_tokens)
        if self.residual_tokens is not None:
            positive_int("residual_tokens", self.residual_tokens)
            if not self.residual:
                raise ValueError("residual_tokens needs residual=True (it says where the projection is added)")
        if self.residual_mode == "prepend" and self.residual_tokens is None:
            raise ValueError("residual_mode='prepend' needs residual_tokens (how many tokens to put ahead of the text)")
        if self.target_norm is not None:
            if not self.target_norm > 0:
                raise ValueError(f"target_norm must be > 0 or None, got {self.target_norm!r}")
            if self.normalize != "rms":
                raise ValueError("target_norm needs normalize='rms' (it scales the normalised states)")
        if self.residual and self.kind == "identity":
            raise ValueError("residual has no meaning for kind='identity' (it already returns the text embeddings)")
        if self.backbone is not None and not isinstance(self.backbone, dict):
            raise ValueError(f"backbone must be a fingerprint dict or None, got {type(self.backbone).__name__}")

    @property
    def uses_text(self) -> bool:  # whether fusion needs the demonstration's text embeddings
        return self.residual or self.kind == "identity"


def pool_tokens(x: torch.Tensor, m: int) -> torch.Tensor:
    """(n, D) -> (m, D) by adaptive average pooling over the token axis."""
    return F.adaptive_avg_pool1d(x.t().unsqueeze(0), m).squeeze(0).t()


def describe(fingerprint: Optional[dict]) -> str:
    """A fingerprint in words: "pocket (model M, revision R, dtype D, hidden 576, layer -1)"."""
    if not fingerprint:
        return "unknown (no fingerprint recorded)"
    fp = fingerprint
    return (f"{fp.get('family')} (model {fp.get('model')}, revision {fp.get('revision')}, dtype {fp.get('dtype')}, "
            f"hidden {fp.get('hidden_size')}, layer {fp.get('layer')})")


class Fuser(nn.Module):
    """Hidden states (T, hidden_size) [+ text embeddings (T, embed_size)] -> fused tokens (T', embed_size)."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        self.source = None  # the folder it was loaded from, for messages
        H, E = config.hidden_size, config.embed_size
        if config.kind == "linear":
            self.proj = nn.Linear(H, E)
            last = self.proj
        elif config.kind == "mlp":
            inner = max(1, int(round(config.mlp_ratio * E)))
            self.proj = nn.Sequential(nn.Linear(H, inner), nn.GELU(), nn.Linear(inner, E))
            last = self.proj[2]
        else:
            self.proj = None
            return
        with torch.no_grad():
            if config.residual:
                last.weight.zero_()
                last.bias.zero_()
            elif config.init == "identity" and config.kind == "linear" and H == E:
                self.proj.weight.copy_(config.init_scale * torch.eye(H))
                self.proj.bias.zero_()
            elif config.init == "identity":
                logger.info("identity init needs a linear fuser with hidden_size == embed_size (%s, %d -> %d): "
                            "default init instead", config.kind, H, E)

    # ----------------------------------------------------------------- building
    @classmethod
    def for_backbone(cls, backbone, **config_overrides) -> "Fuser":
        """A fresh fuser whose config records ``backbone``'s fingerprint and sizes."""
        layer = config_overrides.pop("layer", getattr(backbone, "layer", -1))
        hidden = backbone.hidden_size
        embed_size = config_overrides.pop("embed_size", getattr(backbone, "embed_size", hidden))
        config = FusionConfig(hidden_size=hidden, embed_size=embed_size, layer=layer,
                              backbone=dict(backbone.fingerprint(layer=layer)), **config_overrides)
        return cls(config)

    # ----------------------------------------------------------------- fusing
    def _prepare(self, hidden: torch.Tensor) -> torch.Tensor:
        """(T, H) states -> pooled, normalised (T', H) in the fuser's dtype and device."""
        if hidden.dim() != 2 or hidden.shape[1] != self.config.hidden_size:
            raise ValueError(f"hidden states must be (tokens, {self.config.hidden_size}), got {tuple(hidden.shape)}")
        param = next(self.parameters(), None)
        if param is not None:
            hidden = hidden.to(device=param.device, dtype=param.dtype)
        hidden = self._pool(hidden)
        if self.config.normalize == "rms":
            x = hidden.float()
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS)
            if self.config.target_norm is not None:
                x = x * (self.config.target_norm / math.sqrt(x.shape[-1]))
            hidden = x.to(hidden.dtype)
        return hidden

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """(T, D) -> (min(T, pool_tokens), D) by adaptive average pooling over the tokens."""
        m = self.config.pool_tokens
        if m is None or x.shape[0] <= m:
            return x
        return pool_tokens(x, m)

    def _text(self, text_embeds: Optional[torch.Tensor], tokens: int) -> torch.Tensor:
        if text_embeds is None:
            raise ValueError(f"a {'residual' if self.config.residual else self.config.kind} fuser needs the "
                             "demonstration's text embeddings (text_embeds)")
        if tuple(text_embeds.shape) != (tokens, self.config.embed_size):
            raise ValueError(f"text_embeds must be ({tokens}, {self.config.embed_size}) like the hidden states, "
                             f"got {tuple(text_embeds.shape)}")
        return self._pool(text_embeds)

    def forward(self, hidden: torch.Tensor, text_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """hidden (T, hidden_size), text_embeds (T, embed_size) or None -> fused (T', embed_size),
        T' = T or min(T, pool_tokens). Needs text_embeds when residual or identity."""
        if self.config.kind == "identity":
            return self._text(text_embeds, hidden.shape[0])
        prepared = self._prepare(hidden)
        if not self.config.residual:
            return self.proj(prepared)
        return self._join(self._text(text_embeds, hidden.shape[0]), self.proj(prepared[:self._written(prepared)]))

    def _written(self, prepared: torch.Tensor) -> int:
        """How many leading tokens the residual projection writes into."""
        m = self.config.residual_tokens
        return prepared.shape[0] if m is None else min(m, prepared.shape[0])

    def _join(self, text: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        """text (T', E) and the projection (m <= T' rows): added onto the first m rows (add), or ahead of
        the text as m rows of their own (prepend)."""
        text = text.to(projected)
        if self.config.residual_mode == "prepend":
            return torch.cat([projected, text])
        m = projected.shape[0]
        return projected + text if m == text.shape[0] else torch.cat([text[:m] + projected, text[m:]])

    def forward_batch(self, states: Sequence, embed_fn: Optional[Callable] = None) -> list[torch.Tensor]:
        """Many demonstrations at once. ``states``: DemoStates (hidden (T_i, H), token_ids (T_i,));
        ``embed_fn``: token ids (T,) -> input embeddings (T, E), needed when residual or identity.
        Returns fused tokens (T_i', E) per demonstration. Text embeddings are taken without grad."""
        texts = [None] * len(states)
        if self.config.uses_text:
            if embed_fn is None:
                raise ValueError("this fuser adds the text embeddings: forward_batch needs embed_fn")
            with torch.no_grad():
                texts = [embed_fn(s.token_ids).detach() for s in states]
        if self.config.kind == "identity" or not states:
            return [self(s.hidden, t) for s, t in zip(states, texts)]
        # the projection works token by token: project every demonstration in one matmul
        prepared = [self._prepare(s.hidden.detach()) for s in states]
        if self.config.residual:
            prepared = [p[:self._written(p)] for p in prepared]
        fused = self.proj(torch.cat(prepared)).split([p.shape[0] for p in prepared])
        if self.config.residual:
            fused = [self._join(self._text(t, s.hidden.shape[0]), f) for s, t, f in zip(states, texts, fused)]
        return list(fused)

    def fuse_demos(self, backbone, demos: Sequence, grad: bool = False) -> list[torch.Tensor]:
        """Demonstrations -> fused tokens (T_i', embed_size) per demonstration, read by ``backbone`` at
        ``config.layer``. Without grad unless asked (training asks)."""
        self.check_backbone(backbone)
        states = backbone.read_demos(demos, layer=self.config.layer)
        with torch.set_grad_enabled(grad):
            return self.forward_batch(states, backbone.embed_tokens)

    # ----------------------------------------------------------------- checking
    def check_backbone(self, backbone) -> None:
        """Raise FusionMismatchError when ``backbone`` is not the one this fuser was made for (without a
        recorded fingerprint, only the hidden size is checked)."""
        recorded, name = self.config.backbone, self.source or "(in memory)"
        fix = "retrain with `aim train fuser` or load the matching backbone"
        if recorded is None:
            if backbone.hidden_size != self.config.hidden_size:
                raise FusionMismatchError(f"fuser {name} expects hidden size {self.config.hidden_size}; this "
                                          f"backbone has {backbone.hidden_size}: {fix}")
            return
        current = dict(backbone.fingerprint(layer=self.config.layer))
        if current != recorded:
            differ = sorted(k for k in set(current) | set(recorded) if current.get(k) != recorded.get(k))
            raise FusionMismatchError(f"fuser {name} was made for backbone {describe(recorded)}; this backbone is "
                                      f"{describe(current)} (differs in {', '.join(differ)}): {fix}")

    # ----------------------------------------------------------------- saving
    def save_pretrained(self, folder: str) -> None:
        """Write ``fusion_config.json`` (indent 2, sorted keys) and ``fusion_model.safetensors``."""
        save_checkpoint(folder, self, self.config, WEIGHTS_NAME, CONFIG_NAME)
        logger.info("saved %s fuser to %s", self.config.kind, folder)

    @classmethod
    def from_pretrained(cls, folder: str, backbone=None) -> "Fuser":
        """Read a fuser folder; with ``backbone``, refuse one made for another backbone or layer."""
        if not os.path.isdir(folder):
            raise AimError(f"fuser folder {folder} does not exist; train one with `aim train fuser`")
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise AimError(f"fuser folder {folder} is missing {' and '.join(missing)} (a fuser checkpoint holds "
                           f"{CONFIG_NAME} and {WEIGHTS_NAME}); train one with `aim train fuser`")
        with open(os.path.join(folder, CONFIG_NAME)) as f:
            raw = json.load(f)
        unknown = sorted(set(raw) - {f.name for f in fields(FusionConfig)})
        if unknown:
            raise AimError(f"{os.path.join(folder, CONFIG_NAME)} has unknown fields {', '.join(unknown)}: "
                           "it was written by a newer aim; upgrade aim")
        try:
            config = FusionConfig(**raw)
        except ValueError as e:
            raise AimError(f"{os.path.join(folder, CONFIG_NAME)} is invalid: {e}") from e
        model = cls(config)
        model.source = folder
        model.load_state_dict(load_file(os.path.join(folder, WEIGHTS_NAME)))
        if backbone is not None:
            model.check_backbone(backbone)
        logger.info("loaded %s fuser from %s (made for %s)", config.kind, folder, describe(config.backbone))
        return model


def identity_fuser(hidden_size: int, embed_size: Optional[int] = None, layer: int = -1) -> Fuser:
    """No fusion: every demonstration stays its own text embeddings (T, embed_size)."""
    return Fuser(FusionConfig(hidden_size=hidden_size, embed_size=embed_size, layer=layer, kind="identity"))
