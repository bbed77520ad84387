"""The pocket's checkpoint folders and its trainers' configurations, plain data (no torch, so
``aim train connector --help`` and ``aim train backbone --help`` read their defaults from here)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from ...training.config import RunConfig

#: image set -> share of binding episodes (kept here, torch-free, for --help; episodes.py samples by it)
TRAINING_MIX = {"fashion-mnist": 0.2, "patterns": 0.15, "easy-vqa-shapes": 0.05, "easy-vqa-colors": 0.1,
                "photos": 0.2, "clipart": 0.3}
#: label vocabularies of the binding episodes (training word pools of aim.data.vocab) and their shares
VOCABULARIES = {"cv": 0.35, "real": 0.2, "number": 0.15, "multi": 0.3}

CHECKPOINTS = os.path.join(os.path.dirname(__file__), "checkpoints")
STAGE1_CONNECTOR = os.path.join(CHECKPOINTS, "connector")  # `aim train connector`
DEFAULT_CHECKPOINT = os.path.join(CHECKPOINTS, "icl")  # `aim train backbone`: connector + LoRA; what `pocket` loads
DEFAULT_FUSER = os.path.join(CHECKPOINTS, "fuser")  # `aim train fuser` on the default checkpoint


@dataclass
class ConnectorTrainConfig(RunConfig):
    """Stage 1 (``aim train connector``); the defaults are those the shipped connector was trained with."""

    out: str = "runs/connector"
    steps: int = 800
    batch_size: int = 16
    warmup: int = 30
    val_examples: int = 96
    eval_every: int = 100
    save_every: int = 50
    log_every: int = 5
    lr: float = 1e-3
    image_size: int = 128
    init: Optional[str] = field(default=None, metadata={
        "help": "connector folder to start from (its per-cell MLP fits any image size); default: a fresh one"})
    easy_vqa_images: int = 4000
    fashion_per_class: int = 400


@dataclass
class BackboneTrainConfig(RunConfig):
    """Stage 2 (``aim train backbone``) on the varied episodes of ``episodes.py``; the shipped ``icl``
    checkpoint is this run (docs/pocket-backbone.md)."""

    out: str = "runs/pocket-icl"
    steps: int = 320
    warmup: int = 20
    val_examples: int = 48
    init: str = STAGE1_CONNECTOR  # the stage-1 connector to start from
    init_adapter: Optional[str] = field(default=None, metadata={
        "help": "a pocket checkpoint folder whose LoRA adapter to start from (default: a fresh LoRA)"})
    image_size: int = field(default=256, metadata={"help": "vision input size: 256 px gives 8x8 = 64 image tokens"})
    lr_connector: float = 3e-4
    lr_lora: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    caption_fraction: float = 0.1
    vqa_fraction: float = 0.15
    names_fraction: float = 0.1
    max_shots: int = 16
    image_sets: str = field(default=",".join(TRAINING_MIX), metadata={
        "help": "training image sets of the binding and naming episodes, comma-separated, each NAME or "
                "NAME:SHARE (relative; a name alone keeps its default share)"})
    vocabularies: str = field(default=",".join(f"{k}:{v}" for k, v in VOCABULARIES.items()), metadata={
        "help": "label vocabularies of the binding episodes (training word pools), comma-separated, each "
                "NAME or NAME:SHARE (relative)"})
    easy_vqa_images: int = 3000
