"""Training configurations, plain data (no torch, so ``aim train --help`` reads its defaults from here):
``RunConfig``, what every resumable run has, and ``FuserTrainConfig``, which holds a ``FusionConfig``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from ..errors import ConfigError
from ..fusion.config import TRAINED_FUSER, FusionConfig

PRECISIONS = ("auto", "no", "bf16", "fp16")
OBJECTIVES = ("lm", "distill", "both")


@dataclass
class RunConfig:
    """What every resumable training run has. Trainers' configs extend it (and set their defaults)."""

    out: str = field(default="runs/train", metadata={"help": "run folder: checkpoint, log, loss curve, resume point"})
    steps: int = field(default=150, metadata={"help": "length of the run and of its learning-rate schedule"})
    stop_after: Optional[int] = field(default=None, metadata={
        "help": "end this invocation after this step (the schedule stays that of `steps`); run again to go on"})
    batch_size: int = field(default=8, metadata={"help": "examples per optimizer step and process"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step and process"})
    warmup: int = field(default=10, metadata={"help": "steps of linear warmup"})
    weight_decay: float = 0.0
    seed: int = 0
    val_examples: int = field(default=32, metadata={"help": "held-out examples (drawn with their own seed)"})
    eval_every: int = field(default=50, metadata={"help": "held-out pass period in steps (and at the last step)"})
    save_every: int = field(default=20, metadata={"help": "resume-point period in steps (and at the last step)"})
    log_every: int = field(default=2, metadata={"help": "log row period in steps"})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA, none on CPU), no, bf16, fp16"})

    def __post_init__(self):
        for name in ("batch_size", "grad_accum", "eval_every", "save_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.steps < 0 or self.warmup < 0:
            raise ConfigError(f"--steps and --warmup must be >= 0, got {self.steps} and {self.warmup}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"--batch-size {self.batch_size} must be a multiple of --grad-accum {self.grad_accum}")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"--mixed-precision {self.mixed_precision!r}: use one of {', '.join(PRECISIONS)}")

    def precision(self, device: str) -> str:
        """``auto`` decided once, for every trainer: bf16 on CUDA, none elsewhere."""
        if self.mixed_precision != "auto":
            return self.mixed_precision
        return "bf16" if str(device).startswith("cuda") else "no"


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
        "help": "demos for the closed-form start (aim/training/align.py); 0: zero start; None: 512 where the "
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
