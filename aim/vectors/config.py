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
VECTOR_METHODS = ("live",)


@dataclass
class VectorConfig:
    """The shape of a vector checkpoint and the backbone it was made for; saved as ``vector_config.json``.

    ``live`` (LIVE-style, Peng et al., NeurIPS 2024): one vector ``v_l`` and one weight ``alpha_l`` per
    decoder layer; every position's output ``h`` of layer ``l`` becomes ``(h + alpha_l v_l)`` rescaled
    to the norm of ``h``."""

    method: str = field(default="live", metadata={"help": "live: per-layer shift vectors (LIVE-style)"})
    hidden_size: Optional[int] = field(default=None, metadata={
        "help": "the LLM's hidden size; None until bound to a backbone"})
    num_layers: Optional[int] = field(default=None, metadata={
        "help": "the LLM's decoder layers; None until bound to a backbone"})
    alpha_init: float = field(default=0.1, metadata={"help": "starting value of every layer's weight (LIVE: 0.1)"})
    init_std: float = field(default=0.02, metadata={"help": "the vectors start as N(0, init_std^2)"})
    backbone: Optional[dict] = field(default=None, metadata={
        "help": "fingerprint of the backbone the vectors belong to (filled when bound)"})
    training: Optional[dict] = field(default=None, metadata={"help": "how the vectors were made (filled by training)"})

    def __post_init__(self):
        if self.method not in VECTOR_METHODS:
            raise ConfigError(f"unknown vector method {self.method!r}: use one of {', '.join(VECTOR_METHODS)}")
        for name in ("hidden_size", "num_layers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        if self.init_std < 0:
            raise ConfigError(f"init_std must be >= 0, got {self.init_std}")
        if self.backbone is not None and not isinstance(self.backbone, dict):
            raise ConfigError(f"backbone must be a fingerprint dict or None, got {type(self.backbone).__name__}")

    def bind(self, backbone, num_layers: int) -> "VectorConfig":
        """This config for ``backbone`` (``num_layers`` decoder layers): its sizes and fingerprint."""
        return dataclasses.replace(self, hidden_size=backbone.hidden_size, num_layers=num_layers,
                                   backbone=vector_fingerprint(backbone))


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
    shots: int = field(default=8, metadata={"help": "demonstrations in each teacher prompt (LIVE: 32)"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate of the vectors (LIVE: 1e-3 on VQAv2)"})
    alpha_lr: float = field(default=1e-2, metadata={"help": "learning rate of the per-layer weights"})
    kl_weight: float = field(default=1.0, metadata={"help": "weight of KL(teacher || student) at the answer tokens"})
    ce_weight: float = field(default=0.5, metadata={
        "help": "weight of the answer's cross-entropy (LIVE's hard_loss_weight: 0.5)"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature of the KL term (scaled by T^2)"})

    def __post_init__(self):
        super().__post_init__()
        if self.shots < 1:
            raise ConfigError(f"--shots must be >= 1 (the teacher prompt's demonstrations), got {self.shots}")
        if self.kl_weight < 0 or self.ce_weight < 0 or self.kl_weight + self.ce_weight == 0:
            raise ConfigError(f"--kl-weight {self.kl_weight} and --ce-weight {self.ce_weight}: both >= 0, not both 0")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
