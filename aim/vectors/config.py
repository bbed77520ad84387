"""``VectorConfig``: which activation-steering method a vector checkpoint holds, its shape and the
backbone it belongs to (``vector_config.json``); ``VectorTrainConfig``: how ``aim train vectors``
trains one (it holds a ``VectorConfig``).

Plain data, no torch: the CLI reads the defaults without loading a model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from ..errors import ConfigError
from ..training.config import RunConfig

CONFIG_NAME = "vector_config.json"
WEIGHTS_NAME = "vector_model.safetensors"
VECTOR_METHODS = ("live", "mimic", "mtv")


@dataclass
class VectorConfig:
    """The shape of a vector checkpoint and the backbone it was made for; saved as ``vector_config.json``.

    ``live`` (LIVE-style, Peng et al., NeurIPS 2024): one vector ``v_l`` and one weight ``alpha_l`` per
    decoder layer; every position's output ``h`` of layer ``l`` becomes ``(h + alpha_l v_l)`` rescaled
    to the norm of ``h``.

    ``mimic`` (MimIC-style, Jiang et al., CVPR 2025): per attention head, a shift vector added to the
    head's output with a query-dependent magnitude (aim/vectors/mimic.py).

    ``mtv`` (MTV-style, Huang et al., NeurIPS 2024): the mean output of every attention head at the
    last position of many-shot prompts, and the heads a REINFORCE search chose; at every forward the
    chosen heads' outputs at the last position are replaced by their means."""

    method: str = field(default="live", metadata={
        "help": "live: per-layer shift vectors (LIVE-style); mimic: per-head shifts with a query-dependent "
                "magnitude (MimIC-style); mtv: mean head activations patched into chosen heads (MTV-style)"})
    hidden_size: Optional[int] = field(default=None, metadata={
        "help": "the LLM's hidden size; None until bound to a backbone"})
    num_layers: Optional[int] = field(default=None, metadata={
        "help": "the LLM's decoder layers; None until bound to a backbone"})
    num_heads: Optional[int] = field(default=None, metadata={
        "help": "mimic, mtv: attention heads per layer (when bound)"})
    head_dim: Optional[int] = field(default=None, metadata={"help": "mimic, mtv: width of one head's output (when bound)"})
    alpha_init: float = field(default=0.1, metadata={"help": "starting value of every layer's weight (LIVE: 0.1)"})
    init_std: float = field(default=0.02, metadata={"help": "the vectors start as N(0, init_std^2)"})
    backbone: Optional[dict] = field(default=None, metadata={
        "help": "fingerprint of the backbone the vectors belong to (filled when bound)"})
    training: Optional[dict] = field(default=None, metadata={"help": "how the vectors were made (filled by training)"})

    def __post_init__(self):
        if self.method not in VECTOR_METHODS:
            raise ConfigError(f"unknown vector method {self.method!r}: use one of {', '.join(VECTOR_METHODS)}")
        for name in ("hidden_size", "num_layers", "num_heads", "head_dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        if self.init_std < 0:
            raise ConfigError(f"init_std must be >= 0, got {self.init_std}")
        if self.backbone is not None and not isinstance(self.backbone, dict):
            raise ConfigError(f"backbone must be a fingerprint dict or None, got {type(self.backbone).__name__}")

    def bind(self, backbone, num_layers: int, num_heads: Optional[int] = None,
             head_dim: Optional[int] = None) -> "VectorConfig":
        """This config for ``backbone`` (``num_layers`` decoder layers; heads where the method acts on
        heads): its sizes and fingerprint."""
        return dataclasses.replace(self, hidden_size=backbone.hidden_size, num_layers=num_layers, num_heads=num_heads,
                                   head_dim=head_dim, backbone=vector_fingerprint(backbone))


def vector_fingerprint(backbone) -> dict:
    """What a vector checkpoint must match: the backbone's fingerprint without a reading layer
    (vectors act on every layer)."""
    return {k: v for k, v in backbone.fingerprint().items() if k != "layer"}


@dataclass
class VectorTrainConfig(RunConfig):
    """``aim train vectors``: teacher = the backbone with ``shots`` raw demonstrations (images and
    texts) before the query; student = the query alone with the vectors attached."""

    out: str = "runs/vectors"
    vector: VectorConfig = field(default_factory=VectorConfig, metadata={
        "help": "the vectors' shape (bound to the backbone when training starts)"})
    data: Optional[str] = field(default=None, metadata={
        "help": "the task's training data: a dataset spec (demonstrations and queries drawn from it); None: "
                "the backbone's own training sequences"})
    limit: Optional[int] = None  # records read from `data`
    shots: int = field(default=8, metadata={
        "help": "demonstrations in each teacher prompt (live; LIVE: 32) or mean prompt (mtv; MTV: 4)"})
    lr: Optional[float] = field(default=None, metadata={
        "help": "learning rate of the vectors (live: default 1e-3, LIVE's on VQAv2; mimic: 5e-3) or of the "
                "head-choice logits (mtv: default 0.1, MTV's)"})
    alpha_lr: float = field(default=1e-2, metadata={"help": "learning rate of the per-layer weights"})
    kl_weight: float = field(default=1.0, metadata={
        "help": "live: weight of KL(teacher || student) at the answer tokens"})
    align_weight: float = field(default=1.0, metadata={
        "help": "mimic: weight of the layer-wise alignment (each layer's output at the answer positions against "
                "the teacher's, squared error relative to the teacher's norm)"})
    ce_weight: float = field(default=0.5, metadata={
        "help": "weight of the answer's cross-entropy (LIVE's hard_loss_weight: 0.5)"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature of the KL term (scaled by T^2)"})
    mean_prompts: int = field(default=100, metadata={
        "help": "mtv: many-shot prompts whose last-position head outputs are averaged (MTV: 100)"})
    samples: int = field(default=32, metadata={"help": "mtv: head choices sampled per query in a REINFORCE step (MTV: 32)"})
    candidates: int = field(default=8, metadata={
        "help": "mtv: head choices drawn from the final distribution (beside its p > 0.5 choice); the one with the "
                "lowest held-out loss is kept"})

    def __post_init__(self):
        super().__post_init__()
        if self.shots < 1:
            raise ConfigError(f"--shots must be >= 1 (the teacher prompt's demonstrations), got {self.shots}")
        first = "align_weight" if self.vector.method == "mimic" else "kl_weight"
        weight = getattr(self, first)
        if min(self.kl_weight, self.align_weight, self.ce_weight) < 0 or weight + self.ce_weight == 0:
            raise ConfigError(f"--{first.replace('_', '-')} {weight} and --ce-weight {self.ce_weight}: both >= 0, "
                              "not both 0")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if min(self.mean_prompts, self.samples) < 1 or self.candidates < 0:
            raise ConfigError(f"--mean-prompts {self.mean_prompts} and --samples {self.samples} must be >= 1, "
                              f"--candidates {self.candidates} >= 0")
        if self.samples < 2 and self.vector.method == "mtv":
            raise ConfigError("--samples must be >= 2: REINFORCE compares the sampled head choices with each other")
        if self.lr is None:
            self.lr = {"live": 1e-3, "mimic": 5e-3, "mtv": 0.1}[self.vector.method]
