"""Training vectors on a frozen backbone (``aim train vectors``), as LIVE trains its in-context vector.

``live`` and ``mimic`` train here; ``mtv`` searches its heads here (``search_task_vectors``).

A training sequence is k demonstrations and a query with its answer (aim/training/sequences.py: the
task's training split as a dataset spec, or the backbone's own sequences). The teacher is the
backbone reading the k raw demonstrations (images and texts) before the query, without vectors; the
student is the backbone reading the query alone with the vectors attached. The loss at the
answer's tokens is ``kl_weight * T^2 * KL(teacher_T || student_T) + ce_weight * CE(answer)``
(LIVE: KL over the query's tokens plus 0.5 x the language-model loss of the query). The loop is the
shared one (aim/training/loop.py); only the vectors and their weights train.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from torch import nn

from ..errors import AimError
from ..training.log import plot_loss
from ..training.loop import fit
from ..training.loss import AnswerLoss, answer_prompts, target_logits
from ..training.sequences import TrainSequence, sequence_source
from .config import VectorTrainConfig
from .model import VectorModule, method_class

logger = logging.getLogger(__name__)


class VectorTraining(nn.Module):
    """The vectors with a teacher-student loss as their forward (what accelerate wraps). Teacher: the
    backbone reading the raw k-shot prompt, no vectors (no grad); student: the query alone with the
    vectors attached; both score the answer's tokens. Subclasses say what they read of each prompt
    (``read``: tuples ending in logits (T, vocab) and tokens (T,)) and one example's loss."""

    #: the option that turns the teacher off, named when teacher and student tokenize apart
    teacher_option = "--kl-weight"

    def __init__(self, backbone, vectors: VectorModule, cfg: VectorTrainConfig):
        super().__init__()
        self.vectors, self.cfg = vectors, cfg
        object.__setattr__(self, "backbone", backbone)

    def uses_teacher(self) -> bool:
        return bool(self.cfg.kl_weight)

    def read(self, prompts: list) -> list[tuple]:
        return target_logits(self.backbone, prompts)

    def example_loss(self, student: tuple, teacher) -> torch.Tensor:
        """LIVE's: ``kl_weight * T^2 * KL(teacher_T || student_T) + ce_weight * CE`` at the answer."""
        cfg, (logits, labels) = self.cfg, student
        loss = cfg.ce_weight * F.cross_entropy(logits, labels) if cfg.ce_weight else logits.new_zeros(())
        if teacher is not None:
            T = cfg.temperature
            kl = F.kl_div(F.log_softmax(logits / T, -1), F.log_softmax(teacher[0] / T, -1), log_target=True,
                          reduction="batchmean")
            loss = loss + cfg.kl_weight * T * T * kl
        return loss

    def forward(self, seqs: list[TrainSequence]) -> AnswerLoss:
        bb = self.backbone
        targets = [" " + s.target for s in seqs]
        teacher = [None] * len(seqs)
        if self.uses_teacher():
            with torch.no_grad():
                teacher = self.read(answer_prompts(bb, [bb.raw_icl_body(s.demos, s.image, s.question) for s in seqs],
                                                   targets))
        with self.vectors.attached(bb):
            student = self.read(answer_prompts(bb, [bb.query_body(s.image, s.question) for s in seqs], targets))
        losses = []
        for mine, theirs in zip(student, teacher):
            if theirs is not None and not torch.equal(theirs[-1], mine[-1]):
                raise AimError(f"teacher and student answers tokenized differently; use {self.teacher_option} 0")
            losses.append(self.example_loss(mine, theirs))
        losses = torch.stack(losses)
        tokens = torch.tensor([len(s[-1]) for s in student], dtype=losses.dtype, device=losses.device)
        return AnswerLoss(losses, tokens, [bool(s[-2][0].argmax() == s[-1][0]) for s in student])


class ShiftTraining(VectorTraining):
    """MimIC-style: at the positions that predict the answer, ``align_weight * mean over layers of
    |student - teacher|^2 / |teacher|^2`` (MimIC aligns every query position, squared error) plus
    ``ce_weight * CE(answer)``."""

    teacher_option = "--align-weight"

    def uses_teacher(self) -> bool:
        return True

    def read(self, prompts: list) -> list[tuple]:
        return self.backbone.continuation_states(prompts)

    def example_loss(self, student: tuple, teacher) -> torch.Tensor:
        states, logits, labels = student
        t_states = teacher[0].float()
        gap = ((states.float() - t_states) ** 2).sum(-1) / (t_states ** 2).sum(-1).clamp_min(1e-6)
        loss = self.cfg.align_weight * gap.mean()
        if self.cfg.ce_weight:
            loss = loss + self.cfg.ce_weight * F.cross_entropy(logits, labels)
        return loss


def train_vectors(backbone, cfg: VectorTrainConfig) -> str:
    """Train (or resume) vectors for the frozen ``backbone``; returns the output folder."""
    for module in (backbone.decoder, backbone.lm_head):
        for p in module.parameters():
            p.requires_grad_(False)
    source = sequence_source(cfg.data, backbone, cfg.seed, cfg.shots, cfg.limit, min_shots=cfg.shots)
    set_seed(cfg.seed)
    if cfg.vector.method == "mtv":
        return search_task_vectors(backbone, cfg, source)
    vectors = method_class(cfg.vector.method).for_backbone(backbone, cfg.vector)
    if cfg.vector.method == "mimic":
        model = ShiftTraining(backbone, vectors, cfg)
        groups = [{"params": list(vectors.parameters()), "lr": cfg.lr}]
        objective = (f"{cfg.align_weight} x layer-wise alignment to the raw {cfg.shots}-shot prompt at the answer "
                     f"positions + {cfg.ce_weight} x answer cross-entropy")
    else:
        model = VectorTraining(backbone, vectors, cfg)
        groups = [{"params": [p for n, p in vectors.named_parameters() if n != "alpha"], "lr": cfg.lr},
                  {"params": [vectors.alpha], "lr": cfg.alpha_lr}]
        objective = (f"{cfg.kl_weight} x T^2 KL(raw {cfg.shots}-shot prompt || query with vectors) + "
                     f"{cfg.ce_weight} x answer cross-entropy, T={cfg.temperature}")
    val = [source.sample(np.random.default_rng([cfg.seed, 10**6, i])) for i in range(cfg.val_examples)]
    done = fit(cfg, model, groups, lambda rng, n: [source.sample(rng) for _ in range(n)], val,
               device=str(backbone.device), desc=f"train vectors ({cfg.vector.method})", validate_first=True)
    if done.accelerator.is_main_process:
        vectors.config.training = {
            "objective": objective,
            "trainable_parameters": sum(p.numel() for p in vectors.parameters()),
            "data": source.description, "shots": cfg.shots, "config": dataclasses.asdict(cfg),
            "steps_done": done.step, "minutes": done.minutes,
            # records read: each training sequence is shots demonstrations and a query
            "examples_read": done.step * cfg.batch_size * done.accelerator.num_processes * (cfg.shots + 1),
        }
        vectors.save_pretrained(cfg.out)
        plot_loss(os.path.join(cfg.out, "log.jsonl"), os.path.join(cfg.out, "loss.png"),
                  f"{cfg.vector.method} vectors: distillation loss")
    return cfg.out


def search_task_vectors(backbone, cfg: VectorTrainConfig, source) -> str:
    """MTV-style: the heads' mean outputs over ``cfg.mean_prompts`` raw ``cfg.shots``-shot prompts
    (recomputed, seeded, on every invocation, so a resumed run has the same means), then the
    REINFORCE search over head choices on the shared loop, then the best of the final candidates."""
    from .mtv import HeadSearch, TaskVectors, mean_head_outputs, pick_heads

    vectors = TaskVectors.for_backbone(backbone, cfg.vector)
    prompts = [source.sample(np.random.default_rng([cfg.seed, 3 * 10**6, i])) for i in range(cfg.mean_prompts)]
    vectors.means.copy_(mean_head_outputs(backbone, vectors, prompts))
    search = HeadSearch(backbone, vectors, cfg.samples)
    val = [source.sample(np.random.default_rng([cfg.seed, 10**6, i])) for i in range(cfg.val_examples)]
    done = fit(cfg, search, [{"params": [vectors.logits], "lr": cfg.lr}],
               lambda rng, n: [source.sample(rng) for _ in range(n)], val, device=str(backbone.device),
               desc="search heads (mtv)", validate_first=True)
    if done.accelerator.is_main_process:
        found = pick_heads(search, val, cfg.candidates, cfg.seed)
        logger.info("mtv: %d of %d heads chosen, held-out first-token loss %.3f", found["heads_chosen"],
                    found["of_heads"], found["held_out_first_token_loss"])
        vectors.config.training = {
            "objective": f"REINFORCE over head choices ({cfg.samples} samples a query), reward: the answer's "
                         "first-token cross-entropy with the chosen heads patched",
            "data": source.description, "shots": cfg.shots, "mean_prompts": cfg.mean_prompts,
            "config": dataclasses.asdict(cfg), "steps_done": done.step, "minutes": done.minutes, **found,
            "examples_read": cfg.mean_prompts * (cfg.shots + 1)
            + done.step * cfg.batch_size * done.accelerator.num_processes + len(val),
        }
        vectors.save_pretrained(cfg.out)
        plot_loss(os.path.join(cfg.out, "log.jsonl"), os.path.join(cfg.out, "loss.png"),
                  "mtv head search: REINFORCE surrogate")
    return cfg.out
