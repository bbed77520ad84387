"""Training a fuser on a frozen backbone (``aim train fuser``), in the AIM setting.

A training sequence is k demonstrations and a query (image + question) with its answer. The
backbone reads each demonstration with its image (no grad); the fuser turns the states into fused
tokens; the prompt is [fused demos] + [query image + question] and the loss reaches the fuser
through the frozen LLM. Objectives:
- ``lm``: cross-entropy of the answer tokens (the AIM paper);
- ``distill``: KL from the raw multimodal prompt (the same demonstrations with their images: the
  teacher) to the fused prompt, on the next-token distributions at the answer positions (as SelfCP
  and LIVE do);
- ``both``: their sum.
Sequences come from aim/training/sequences.py: the backbone's own training data, interleaved
documents, or any record dataset. The fuser's shape is one ``FusionConfig`` (default
``TRAINED_FUSER``); the loop and the loss are the shared ones (aim/training/).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from torch import nn

from ..backbones.base import Backbone, Virtual
from ..data.record import Demo
from ..errors import AimError
from ..training.log import plot_loss
from ..training.loop import fit, logged
from ..training.loss import AnswerLoss, answer_prompts, target_logits
from ..training.sequences import TrainSequence, sequence_source
from .config import OBJECTIVES, FuserTrainConfig
from .model import Fuser

logger = logging.getLogger(__name__)

__all__ = ["OBJECTIVES", "FuserTrainConfig", "FusionModel", "align_demos", "train_fuser"]


class FusionModel(nn.Module):
    """The fuser with the sequence loss as its forward (what accelerate wraps)."""

    def __init__(self, backbone: Backbone, fuser: Fuser, objective: str):
        super().__init__()
        self.fuser = fuser
        self.objective = objective
        object.__setattr__(self, "backbone", backbone)

    def _logits(self, bodies: list, targets: list[str], grad: bool):
        with torch.set_grad_enabled(grad):
            return target_logits(self.backbone, answer_prompts(self.backbone, bodies, [" " + t for t in targets]))

    def forward(self, seqs: list[TrainSequence]) -> AnswerLoss:
        bb = self.backbone
        flat = [d for s in seqs for d in s.demos]
        with torch.no_grad():
            states = bb.read_demos(flat, layer=self.fuser.config.layer)
        fused = iter(self.fuser.forward_batch(states, bb.embed_tokens))
        bodies = [[Virtual(next(fused)) for _ in s.demos] + bb.query_body(s.image, s.question) for s in seqs]
        targets = [s.target for s in seqs]
        student = self._logits(bodies, targets, grad=True)
        teacher = None
        if self.objective in ("distill", "both"):
            teacher = self._logits([bb.raw_icl_body(s.demos, s.image, s.question) for s in seqs], targets, grad=False)
        losses = []
        for i, (logits, labels) in enumerate(student):
            loss = logits.new_zeros(())
            if self.objective in ("lm", "both"):
                loss = loss + F.cross_entropy(logits, labels)
            if teacher is not None:
                t_logits, t_labels = teacher[i]
                if not torch.equal(t_labels, labels):
                    raise AimError("teacher and student answers tokenized differently; use objective lm")
                loss = loss + F.kl_div(F.log_softmax(logits, -1), F.log_softmax(t_logits, -1), log_target=True,
                                       reduction="batchmean")
            losses.append(loss)
        losses = torch.stack(losses)
        tokens = torch.tensor([len(labels) for _, labels in student], dtype=losses.dtype, device=losses.device)
        return AnswerLoss(losses, tokens, [bool(lg[0].argmax() == lb[0]) for lg, lb in student])


def align_demos(source, cfg: FuserTrainConfig) -> list:
    """``cfg.align`` demonstrations (with their images) for the aligned start: drawn from the training
    sequences, or, with ``cfg.align_data``, half of them from that dataset (say, the demo pool of a new
    image domain: the fit needs its images and texts, never its answers' correctness)."""
    rng = np.random.default_rng([cfg.seed, 2 * 10**6])
    extra = []
    if cfg.align_data:
        from ..data.spec import load_records
        from ..images import load_image

        records = load_records(cfg.align_data)
        picks = rng.permutation(len(records))[:cfg.align // 2]
        extra = [Demo(load_image(records[i].image), records[i].question, records[i].answer) for i in picks]
        if len(extra) < 2:
            raise AimError(f"--align-data {cfg.align_data}: {len(records)} records; the aligned start needs at "
                           "least 2 with images")
    return own_demos(source, rng, cfg.align - len(extra)) + extra


def own_demos(source, rng: np.random.Generator, wanted: int) -> list:
    """Up to ``wanted`` demonstrations with images from training sequences of ``source`` (at most
    50 x ``wanted`` sequences are drawn, so a source without images cannot loop for ever)."""
    demos: list = []
    for _ in range(50 * wanted):
        if len(demos) >= wanted:
            break
        demos += [d for d in source.sample(rng).demos if d.image is not None]
    return demos[:wanted]


def train_fuser(backbone: Backbone, cfg: FuserTrainConfig) -> str:
    """Train (or resume) a fuser for the frozen ``backbone``; returns the output folder."""
    for module in (backbone.decoder, backbone.lm_head):
        for p in module.parameters():
            p.requires_grad_(False)
    source = sequence_source(cfg.data, backbone, cfg.seed, cfg.max_shots, cfg.limit)
    set_seed(cfg.seed)
    fuser = Fuser.for_backbone(backbone, cfg.fusion).to(backbone.device)
    model = FusionModel(backbone, fuser, cfg.objective)

    def align() -> Optional[dict]:
        if not cfg.align:
            return None
        from .align import align_fuser

        return align_fuser(backbone, fuser, align_demos(source, cfg), cfg.ridge)

    val = [source.sample(np.random.default_rng([cfg.seed, 10**6, i])) for i in range(cfg.val_examples)]
    done = fit(cfg, model, [{"params": list(fuser.parameters()), "lr": cfg.lr}],
               lambda rng, n: [source.sample(rng) for _ in range(n)], val, device=str(backbone.device),
               desc=f"train fuser ({cfg.objective})", on_fresh_start=align, validate_first=True)
    if done.accelerator.is_main_process:
        fuser.config.training = {"objective": cfg.objective, "data": source.description,
                                 "config": dataclasses.asdict(cfg), "aligned_start": logged(cfg.out, "align_r2"),
                                 "steps_done": done.step, "minutes": done.minutes}
        fuser.save_pretrained(cfg.out)
        plot_loss(os.path.join(cfg.out, "log.jsonl"), os.path.join(cfg.out, "loss.png"),
                  f"fuser ({cfg.objective}): answer loss")
    return cfg.out
