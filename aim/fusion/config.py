"""``FusionConfig``: how a fuser is shaped and which backbone it belongs to (``fusion_config.json``);
``FuserTrainConfig``: how ``aim train fuser`` trains one (it holds a ``FusionConfig``).

Plain data, no torch: the CLI reads its defaults (``TRAINED_FUSER``) without loading a model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Union

from ..errors import ConfigError
from ..training.config import RunConfig

CONFIG_NAME = "fusion_config.json"
WEIGHTS_NAME = "fusion_model.safetensors"
FUSER_KINDS = ("linear", "mlp", "identity")
NORMALIZE = ("none", "rms")
RESIDUAL_MODES = ("add", "prepend")
INITS = ("identity", "default")
TARGET_EMBEDDINGS = "embeddings"


@dataclass
class FusionConfig:
    """How a fuser is shaped and which backbone it belongs to; saved as ``fusion_config.json``."""

    hidden_size: Optional[int] = field(default=None, metadata={
        "help": "the backbone LLM's hidden size; None until bound to a backbone (Fuser.for_backbone fills it)"})
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
    target_norm: Union[float, str, None] = field(default=None, metadata={
        "help": "with normalize=rms: the L2 norm given to each normalised state, typically the norm of an "
                "input embedding; 'embeddings': the backbone's mean input-embedding norm, measured when the "
                "config is bound to a backbone (None: unit RMS)"})
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
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

        if self.hidden_size is not None:
            positive_int("hidden_size", self.hidden_size)
            if self.embed_size is None:
                self.embed_size = self.hidden_size
        if self.embed_size is not None:
            positive_int("embed_size", self.embed_size)
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise ConfigError(f"layer must be an integer, got {self.layer!r}")
        for name, allowed in (("kind", FUSER_KINDS), ("normalize", NORMALIZE), ("init", INITS),
                              ("residual_mode", RESIDUAL_MODES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if self.pool_tokens is not None:
            positive_int("pool_tokens", self.pool_tokens)
        if self.residual_tokens is not None:
            positive_int("residual_tokens", self.residual_tokens)
            if not self.residual:
                raise ConfigError("residual_tokens needs residual=True (it says where the projection is added)")
        if self.residual_mode == "prepend" and self.residual_tokens is None:
            raise ConfigError("residual_mode='prepend' needs residual_tokens (how many tokens to put ahead of the "
                              "text; --residual-tokens N with N > 0)")
        if self.target_norm is not None:
            if self.target_norm != TARGET_EMBEDDINGS and not (isinstance(self.target_norm, (int, float))
                                                              and self.target_norm > 0):
                raise ConfigError(f"target_norm must be > 0, {TARGET_EMBEDDINGS!r} or None, got {self.target_norm!r}")
            if self.normalize != "rms":
                raise ConfigError("target_norm needs normalize='rms' (it scales the normalised states)")
        if self.residual and self.kind == "identity":
            raise ConfigError("residual has no meaning for kind='identity' (it already returns the text embeddings)")
        if self.backbone is not None and not isinstance(self.backbone, dict):
            raise ConfigError(f"backbone must be a fingerprint dict or None, got {type(self.backbone).__name__}")

    @property
    def uses_text(self) -> bool:  # whether fusion needs the demonstration's text embeddings
        return self.residual or self.kind == "identity"

    def bind(self, backbone) -> "FusionConfig":
        """This config for ``backbone``: its hidden and embedding sizes, its fingerprint at this
        config's layer, and ``target_norm='embeddings'`` measured on its input embeddings."""
        target = self.target_norm
        if target == TARGET_EMBEDDINGS:
            target = float(backbone.input_embeddings.weight.float().norm(dim=-1).mean())
        hidden = backbone.hidden_size
        return dataclasses.replace(self, hidden_size=hidden, embed_size=getattr(backbone, "embed_size", hidden),
                                   target_norm=target, backbone=dict(backbone.fingerprint(layer=self.layer)))


#: the fuser ``aim train fuser`` makes unless told otherwise (the shape of the shipped pocket fuser):
#: the text embeddings plus a projection of layer 15's RMS-normalised states, written into the first
#: 4 tokens (docs/fuser-design.md)
TRAINED_FUSER = FusionConfig(kind="linear", residual=True, layer=15, normalize="rms", target_norm=TARGET_EMBEDDINGS,
                             residual_tokens=4)

OBJECTIVES = ("lm", "distill", "both")


@dataclass
class FuserTrainConfig(RunConfig):
    out: str = "runs/fuser"
    fusion: FusionConfig = field(default_factory=lambda: dataclasses.replace(TRAINED_FUSER), metadata={
        "help": "the fuser's shape (bound to the backbone when training starts)"})
    data: Optional[str] = field(default=None, metadata={
        "help": "None: the backbone's own training sequences; a dataset spec; or interleaved documents"})
    limit: Optional[int] = None  # records read from `data`
    lr: float = 1e-3
    objective: str = "lm"
    align: Optional[int] = field(default=None, metadata={
        "help": "demos for the closed-form start (aim/fusion/align.py); 0: zero start; None: 512 where the "
                "fuser can take it (residual linear with residual_tokens), else 0"})
    ridge: float = 1e-5
    align_data: Optional[str] = field(default=None, metadata={
        "help": "a dataset spec: half the aligned start's demonstrations come from it"})
    max_shots: int = 8

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}: use one of {', '.join(OBJECTIVES)}")
        f = self.fusion
        alignable = f.kind == "linear" and f.residual and f.residual_tokens is not None
        if self.align is None:
            self.align = 512 if alignable else 0
        if self.align_data and not self.align:
            raise ConfigError(f"--align-data {self.align_data} needs the aligned start: pass --align N (N > 0)")
        if self.align and not alignable:
            raise ConfigError(f"--align {self.align} needs a residual linear fuser with residual tokens (got kind="
                              f"{f.kind}, residual={f.residual}, residual_tokens={f.residual_tokens}): pass --align 0")
