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

import dataclasses
import hashlib
import logging
import math
import os
from dataclasses import fields
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AimError, ConfigError, FusionMismatchError
from ..files import load_weights, read_json, save_module
from ..fingerprints import differences
from .config import CONFIG_NAME, TARGET_EMBEDDINGS, WEIGHTS_NAME, FusionConfig

logger = logging.getLogger(__name__)

RMS_EPS = 1e-6


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
        if config.hidden_size is None or config.target_norm == TARGET_EMBEDDINGS:
            raise ConfigError("this FusionConfig is not bound to a backbone (hidden_size or target_norm unresolved): "
                              "build the fuser with Fuser.for_backbone(backbone, config)")
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
    def for_backbone(cls, backbone, config: Optional[FusionConfig] = None, **fields_) -> "Fuser":
        """A fresh fuser for ``backbone``: ``config`` (default: FusionConfig at the backbone's layer)
        with ``fields_`` replaced, bound to the backbone (sizes, fingerprint; see FusionConfig.bind)."""
        if config is None:
            config = FusionConfig(layer=getattr(backbone, "layer", -1))
        return cls(dataclasses.replace(config, **fields_).bind(backbone))

    def fingerprint(self) -> dict:
        """What a bank records of its fuser: kind, layer, and a digest of config and weights."""
        h = hashlib.sha256(repr(sorted((k, v) for k, v in vars(self.config).items() if k != "training")).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().numpy().tobytes())
        return {"kind": self.config.kind, "layer": self.config.layer, "digest": h.hexdigest()[:16]}

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
        differ = differences(recorded, current)
        if differ:
            raise FusionMismatchError(f"fuser {name} was made for backbone {describe(recorded)}; this backbone is "
                                      f"{describe(current)} (differs in {', '.join(differ)}): {fix}")

    # ----------------------------------------------------------------- saving
    def save_pretrained(self, folder: str) -> None:
        """Write ``fusion_config.json`` (indent 2, sorted keys) and ``fusion_model.safetensors``."""
        save_module(folder, self, self.config, WEIGHTS_NAME, CONFIG_NAME)
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
        fix = "train a fuser with `aim train fuser`, or point --fuser at one"
        raw = read_json(os.path.join(folder, CONFIG_NAME), fix)
        unknown = sorted(set(raw) - {f.name for f in fields(FusionConfig)})
        if unknown:
            raise AimError(f"{os.path.join(folder, CONFIG_NAME)} has unknown fields {', '.join(unknown)}: "
                           "it was written by a newer aim; upgrade aim")
        try:
            config = FusionConfig(**raw)
        except ConfigError as e:
            raise ConfigError(f"{os.path.join(folder, CONFIG_NAME)} is invalid: {e}") from e
        model = cls(config)
        model.source = folder
        load_weights(model, os.path.join(folder, WEIGHTS_NAME), CONFIG_NAME, fix)
        if backbone is not None:
            model.check_backbone(backbone)
        logger.info("loaded %s fuser from %s (made for %s)", config.kind, folder, describe(config.backbone))
        return model


def identity_fuser(hidden_size: int, embed_size: Optional[int] = None, layer: int = -1) -> Fuser:
    """No fusion: every demonstration stays its own text embeddings (T, embed_size)."""
    return Fuser(FusionConfig(hidden_size=hidden_size, embed_size=embed_size, layer=layer, kind="identity"))


def load_fuser(spec: Optional[str], backbone, layer: Optional[int] = None) -> Fuser:
    """A fuser for ``backbone``: ``identity`` (no fusion: the demonstrations' own text embeddings, at
    ``layer`` or the backbone's), a fuser folder, or None for the one that ships with the backbone."""
    if spec is None:
        spec = backbone.shipped_fuser()
        if spec is None:
            raise AimError(f"no fuser given and none ships with backbone {backbone.model_id}: pass --fuser PATH (a "
                           "folder from `aim train fuser`) or --fuser identity (text embeddings, no fusion)")
    if spec == "identity":
        fuser = Fuser.for_backbone(backbone, kind="identity", **({"layer": layer} if layer is not None else {}))
        return fuser.to(backbone.device)
    return Fuser.from_pretrained(spec, backbone=backbone).to(backbone.device, backbone.dtype)
