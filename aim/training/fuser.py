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
Sequences come from :class:`SequenceSource`: the pocket backbone's training episodes, interleaved
image-text documents (:mod:`aim.data.documents`, OBELICS layout), or any record dataset
(``load_records`` spec) grouped at random into sequences. The loop is that of
:mod:`aim.training.backbone`: accelerate, seeded per-step batches, resumable checkpoints.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..backbones.base import Backbone, Demo, Virtual
from ..errors import AimError
from ..fusion import Fuser
from .loop import (accumulated_step, append_log, held_out, lr_at, plot_loss, read_log, resume_point, save_state,
                   seed_everything)

logger = logging.getLogger(__name__)

OBJECTIVES = ("lm", "distill", "both")
POCKET_EPISODES = "pocket-episodes"
DOCUMENT_QUESTION = "Describe the image."  # interleaved documents: each image's following text is its answer


@dataclass
class FuserTrainConfig:
    out: str = "runs/fuser"
    data: str = POCKET_EPISODES  # or a dataset spec / file for aim.data.spec.load_records
    limit: Optional[int] = None  # records read from `data` (a spec)
    steps: int = 150
    stop_after: Optional[int] = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    warmup: int = 10
    weight_decay: float = 0.0
    objective: str = "lm"
    kind: str = "linear"
    residual: bool = True
    layer: int = 15
    normalize: str = "rms"
    target_norm: Optional[float] = -1.0  # -1: the backbone's mean input-embedding norm; None: unit RMS
    residual_tokens: Optional[int] = 4  # residual: the projection writes into the first 4 tokens only
    residual_mode: str = "add"  # or prepend: those 4 tokens go ahead of the text embeddings
    pool_tokens: Optional[int] = None
    init_scale: float = 1.0
    align: Optional[int] = None  # demos for the closed-form start (aim.training.align); 0: zero start;
    # None: 512 where the fuser can take it (residual linear with residual_tokens), else 0
    ridge: float = 1e-5
    align_data: Optional[str] = None  # a dataset spec: half the aligned start's demonstrations come from it
    max_shots: int = 8
    vqa_fraction: float = 0.25  # pocket episodes: share of easy-VQA runs (the rest is label binding)
    seed: int = 0
    val_examples: int = 32
    eval_every: int = 50
    save_every: int = 20
    log_every: int = 2
    mixed_precision: str = "auto"

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise AimError(f"unknown objective {self.objective!r}: use one of {', '.join(OBJECTIVES)}")
        alignable = self.kind == "linear" and self.residual and self.residual_tokens is not None
        if self.align is None:
            self.align = 512 if alignable else 0
        if self.residual_mode == "prepend" and not (self.residual and self.residual_tokens):
            raise AimError("--residual-mode prepend needs a residual fuser with --residual-tokens N (N > 0): the N "
                           "tokens it puts ahead of the text")
        if self.align_data and not self.align:
            raise AimError(f"--align-data {self.align_data} needs the aligned start: pass --align N (N > 0)")
        if self.align and not alignable:
            raise AimError(f"--align {self.align} needs a residual linear fuser with residual tokens (got kind="
                           f"{self.kind}, residual={self.residual}, residual_tokens={self.residual_tokens}): "
                           "pass --align 0")
        if self.batch_size % self.grad_accum:
            raise AimError(f"batch_size {self.batch_size} must be a multiple of grad_accum {self.grad_accum}")


@dataclass
class TrainSequence:
    demos: list  # Demo
    image: object
    question: str
    target: str


class SequenceSource:
    """Draws training sequences from the pocket episodes or from a list of records."""

    def __init__(self, cfg: FuserTrainConfig):
        self.cfg = cfg
        self.pool = self.records = self.documents = None
        from ..data.documents import is_documents, load_documents

        if cfg.data == POCKET_EPISODES:
            from .episodes import EpisodePool

            self.pool = EpisodePool(seed=cfg.seed)
        elif cfg.data.startswith("documents:") or is_documents(cfg.data):
            self.documents = load_documents(cfg.data.removeprefix("documents:"), cfg.limit)
        else:
            from ..data.spec import load_records

            self.records = load_records(cfg.data, cfg.limit)
            if len(self.records) < cfg.max_shots + 1:
                raise AimError(f"{cfg.data}: {len(self.records)} records, fewer than max_shots + 1 = "
                               f"{cfg.max_shots + 1} needed for one training sequence")

    def sample(self, rng: np.random.Generator) -> TrainSequence:
        if self.pool is not None:
            ex = self.pool.sample(rng, 0.0, self.cfg.vqa_fraction, self.cfg.max_shots)
            img = self.pool.images
            return TrainSequence([Demo(img[i], q, a) for i, q, a in ex.demos], img[ex.image], ex.question, ex.target)
        from ..images import load_image

        if self.documents is not None:  # a window of consecutive pairs; the last one is the query
            doc = self.documents[int(rng.integers(len(self.documents)))]
            size = min(len(doc), int(rng.integers(2, self.cfg.max_shots + 2)))
            first = int(rng.integers(len(doc) - size + 1))
            pairs = [(load_image(img), text) for img, text in doc[first:first + size]]
            demos = [Demo(img, DOCUMENT_QUESTION, text) for img, text in pairs[:-1]]
            return TrainSequence(demos, pairs[-1][0], DOCUMENT_QUESTION, pairs[-1][1])
        picks = rng.choice(len(self.records), size=int(rng.integers(1, self.cfg.max_shots + 1)) + 1, replace=False)
        recs = [self.records[i] for i in picks]
        demos = [Demo(load_image(r.image), r.question, r.answer) for r in recs[:-1]]
        return TrainSequence(demos, load_image(recs[-1].image), recs[-1].question, recs[-1].answer)


def mean_embedding_norm(backbone: Backbone) -> float:
    """The mean L2 norm of the LLM's input embeddings (the size fused tokens should have)."""
    return float(backbone.input_embeddings.weight.float().norm(dim=-1).mean())


class FusionModel(nn.Module):
    """The fuser with the sequence loss as its forward (what accelerate wraps)."""

    def __init__(self, backbone: Backbone, fuser: Fuser, objective: str):
        super().__init__()
        self.fuser = fuser
        self.objective = objective
        object.__setattr__(self, "backbone", backbone)

    def _target_logits(self, bodies: list, targets: list[str], grad: bool):
        bb = self.backbone
        prompts = [bb.wrap(b) + [" " + t] for b, t in zip(bodies, targets)]
        with torch.set_grad_enabled(grad):
            batch = bb.encode(prompts, spans=True, chat=False)
            hidden = bb.run(batch).last_hidden_state
            out = []
            for i, spans in enumerate(batch.spans):
                start, end = spans[-1]
                out.append((bb.lm_head(hidden[i, start - 1:end - 1]).float(), batch.input_ids[i, start:end]))
        return out

    def forward(self, seqs: list[TrainSequence]) -> tuple[torch.Tensor, list, list]:
        bb = self.backbone
        flat = [d for s in seqs for d in s.demos]
        with torch.no_grad():
            states = bb.read_demos(flat, layer=self.fuser.config.layer)
        fused = iter(self.fuser.forward_batch(states, bb.embed_tokens))
        bodies = [[Virtual(next(fused)) for _ in s.demos] + bb.query_body(s.image, s.question) for s in seqs]
        student = self._target_logits(bodies, [s.target for s in seqs], grad=True)
        teacher = None
        if self.objective in ("distill", "both"):
            raw = [bb.raw_icl_body(s.demos, s.image, s.question) for s in seqs]
            teacher = self._target_logits(raw, [s.target for s in seqs], grad=False)
        losses, first = [], []
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
            first.append(bool(logits[0].argmax() == labels[0]))
        return torch.stack(losses).mean(), [x.item() for x in losses], first


def new_fuser(backbone: Backbone, cfg: FuserTrainConfig) -> Fuser:
    target = mean_embedding_norm(backbone) if cfg.target_norm == -1.0 else cfg.target_norm
    return Fuser.for_backbone(backbone, kind=cfg.kind, residual=cfg.residual, layer=cfg.layer,
                              normalize=cfg.normalize, target_norm=target if cfg.normalize == "rms" else None,
                              residual_tokens=cfg.residual_tokens if cfg.residual else None,
                              residual_mode=cfg.residual_mode,
                              pool_tokens=cfg.pool_tokens, init_scale=cfg.init_scale)


def align_demos(source: "SequenceSource", cfg: FuserTrainConfig) -> list:
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
    demos, wanted = [], cfg.align - len(extra)
    for _ in range(50 * wanted):
        if len(demos) >= wanted:
            break
        seq = source.sample(rng)
        demos += [d for d in seq.demos if d.image is not None]
    return demos[:wanted] + extra


def train_fuser(backbone: Backbone, cfg: FuserTrainConfig) -> str:
    """Train (or resume) a fuser for the frozen ``backbone``; returns the output folder."""
    from accelerate import Accelerator

    cuda = str(backbone.device).startswith("cuda")
    precision = ("bf16" if cuda else "no") if cfg.mixed_precision == "auto" else cfg.mixed_precision
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=precision, cpu=not cuda)
    for module in (backbone.decoder, backbone.lm_head):
        for p in module.parameters():
            p.requires_grad_(False)
    os.makedirs(cfg.out, exist_ok=True)
    source = SequenceSource(cfg)
    seed_everything(cfg.seed)
    fuser = new_fuser(backbone, cfg).to(backbone.device)
    model = FusionModel(backbone, fuser, cfg.objective)
    optim = torch.optim.AdamW(fuser.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state_path, log_path = os.path.join(cfg.out, "state.pt"), os.path.join(cfg.out, "log.jsonl")
    state = resume_point(cfg.out)
    step, elapsed = state["step"], state["elapsed"]
    if step:
        fuser.load_state_dict(state["fuser"])
        optim.load_state_dict(state["optim"])
        logger.info("resuming %s at step %d", cfg.out, step)
    model, optim = accelerator.prepare(model, optim)
    val = [source.sample(np.random.default_rng([cfg.seed, 10**6, i])) for i in range(cfg.val_examples)]

    def validate() -> dict:
        losses, first = held_out(model, val, model)
        return {"val_loss": float(np.mean(losses)), "val_first_token": float(np.mean(first))}

    last = min(cfg.steps, cfg.stop_after or cfg.steps)
    rank, world = accelerator.process_index, accelerator.num_processes
    bar = tqdm(total=last, initial=step, desc=f"train fuser ({cfg.objective})", unit="step",
               disable=not accelerator.is_main_process)
    start_time = time.perf_counter() - elapsed
    if step == 0 and cfg.align:
        from .align import align_fuser

        stats = align_fuser(backbone, accelerator.unwrap_model(model).fuser, align_demos(source, cfg), cfg.ridge)
        if accelerator.is_main_process:
            append_log(log_path, {"step": 0, **stats})
    if step == 0 and accelerator.is_main_process:
        append_log(log_path, {"step": 0, **validate()})
    while step < last:
        rng = np.random.default_rng([cfg.seed, step])
        seqs = [source.sample(rng) for _ in range(cfg.batch_size * world)][rank::world]
        for group in optim.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
        total = accumulated_step(accelerator, model, optim, seqs, cfg.grad_accum, lambda micro: model(micro)[0])
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}")
        row = {"step": step, "loss": total, "lr": optim.param_groups[0]["lr"], "time": time.perf_counter() - start_time}
        if step % cfg.eval_every == 0 or step == last:
            row.update(validate())
            logger.info("step %d: held-out loss %.3f, first answer token right %.2f", step, row["val_loss"],
                        row["val_first_token"])
        if accelerator.is_main_process:
            if step % cfg.log_every == 0 or "val_loss" in row:
                append_log(log_path, row)
            if step % cfg.save_every == 0 or step == last:
                save_state(state_path, fuser=fuser.state_dict(), optim=optim.state_dict(), step=step,
                           elapsed=time.perf_counter() - start_time)
    bar.close()
    if accelerator.is_main_process:
        from_documents = source.documents is not None
        data = ("pocket episodes: Fashion-MNIST train label binding with made-up words of the training pool "
                f"({1 - cfg.vqa_fraction:.0%}) and easy-VQA train question runs ({cfg.vqa_fraction:.0%}), "
                f"1-{cfg.max_shots} demonstrations" if cfg.data == POCKET_EPISODES
                else f"{cfg.data}: runs of up to {cfg.max_shots + 1} consecutive image-text pairs of interleaved "
                     "documents" if from_documents
                else f"{cfg.data}: random sequences of 1-{cfg.max_shots} demonstrations and a query")
        aligned = next((r for r in read_log(log_path) if "align_r2" in r), None)
        fuser.config.training = {"objective": cfg.objective, "data": data, "config": dataclasses.asdict(cfg),
                                 "aligned_start": aligned and {k: v for k, v in aligned.items() if k != "step"},
                                 "steps_done": step,
                                 "minutes": round((time.perf_counter() - start_time) / 60, 1)}
        fuser.save_pretrained(cfg.out)
        plot_loss(log_path, os.path.join(cfg.out, "loss.png"), f"fuser ({cfg.objective}): answer loss")
    return cfg.out
