"""``RunConfig``: what every resumable training run has, plain data (no torch, so ``aim train --help``
reads its defaults from here). Each trainer's config extends it: the pocket's in
aim/backbones/pocket/config.py, the fuser's (``FuserTrainConfig``) in aim/fusion/config.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..errors import ConfigError

PRECISIONS = ("auto", "no", "bf16", "fp16")


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
