"""The one training loop every trainer uses (the pocket's connector and ICL stages, fusers).

A trainer brings a module whose forward takes a list of examples and returns an ``AnswerLoss``
(aim/training/loss.py), its parameter groups, a ``draw(rng, n)`` of n training examples and its
held-out examples; ``fit`` does the rest through ``accelerate``: seeded per-step batches, gradient
accumulation and clipping, the learning-rate schedule (transformers' cosine with warmup, down to
10% of the base rate), mixed precision, several processes (``accelerate launch``), logging, held-out
passes and resume points.

Batches come from ``numpy.random.default_rng([seed, step])``, drawn for all processes and dealt
out by rank, so a run resumed from its last resume point, or run on N processes with batch b / N,
sees the batches an uninterrupted one-process run would. A resume point is
``accelerator.save_state`` (trainable weights only, optimizer, scheduler, RNG states) in
``OUT/state/`` plus ``progress.json``; it is written to ``OUT/state.tmp/`` and renamed, so a killed
run always finds a whole one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..files import read_json, write_json
from ..locking import FolderLock
from .config import RunConfig
from .log import append_log, cut_log, read_log

logger = logging.getLogger(__name__)

STATE = "state"
PROGRESS = "progress.json"
MIN_LR_RATE = 0.1  # the schedule ends at 10% of the base rate


@dataclass
class Fitted:
    """What ``fit`` leaves: the steps done, the minutes they took (resumed runs included), the
    accelerator, and the model unwrapped (whose trainable parts the trainer saves)."""

    step: int
    minutes: float
    accelerator: object
    model: torch.nn.Module


def default_metrics(examples: Sequence, losses: Sequence[float], first: Sequence[bool]) -> dict:
    return {"val_loss": float(np.mean(losses)), "val_first_token": float(np.mean(first))}


def trainable_names(model: torch.nn.Module) -> set:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def save_resume_point(accelerator, out: str, step: int, elapsed: float) -> None:
    """``accelerator.save_state`` into ``OUT/state.tmp``, then renamed to ``OUT/state``."""
    final, tmp, old = (os.path.join(out, name) for name in (STATE, STATE + ".tmp", STATE + ".old"))
    if accelerator.is_main_process and os.path.isdir(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()  # every process's random_states_N.pkl is in tmp before it is renamed
    if accelerator.is_main_process:
        write_json(os.path.join(tmp, PROGRESS), {"step": step, "elapsed": elapsed})
        if os.path.isdir(final):
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def resume_folder(out: str) -> Optional[str]:
    """The run's last whole resume point, or None for a fresh run."""
    for name in (STATE, STATE + ".old"):  # .old: killed between the two renames of a save
        folder = os.path.join(out, name)
        if os.path.isfile(os.path.join(folder, PROGRESS)):
            return folder
    return None


def _keep_trainable(models, weights, output_dir) -> None:
    """accelerate's save hook: a resume point holds the trained parameters, not the frozen model."""
    for i, model in enumerate(models):
        names = trainable_names(model)
        weights[i] = {k: v for k, v in weights[i].items() if k in names}


def _load_trainable(models, input_dir) -> None:
    """accelerate's load hook, the counterpart of ``_keep_trainable`` (refuses a partial match)."""
    from safetensors.torch import load_file

    model = models.pop(0)
    state = load_file(os.path.join(input_dir, "model.safetensors"))
    names = trainable_names(model)
    if set(state) != names:
        raise ConfigError(f"the resume point {input_dir} holds other trainable parameters than this run has "
                          f"({len(set(state) ^ names)} differ): it was made with other settings; use another --out")
    model.load_state_dict(state, strict=False)


def fit(cfg: RunConfig, model: torch.nn.Module, groups: list[dict], draw: Callable, val: list, *, device: str,
        desc: str, objective: Callable = None, metrics: Callable = default_metrics,
        on_fresh_start: Optional[Callable[[], Optional[dict]]] = None, validate_first: bool = False) -> Fitted:
    """Train ``model`` (or resume it from ``cfg.out``) to ``cfg.steps`` (or ``cfg.stop_after``).

    ``groups``: optimizer parameter groups, each with its base ``lr``. ``draw(rng, n)``: n training
    examples. ``objective(AnswerLoss)``: the scalar to minimise (default: the mean over examples).
    ``on_fresh_start()``: run once before the first step of a fresh run (a closed-form start, say);
    a dict it returns is logged at step 0. ``validate_first``: a held-out pass at step 0 too."""
    from accelerate import Accelerator
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    objective = objective or (lambda out: out.mean())
    cuda = str(device).startswith("cuda")
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.precision(device),
                              cpu=not cuda, step_scheduler_with_optimizer=False)
    os.makedirs(cfg.out, exist_ok=True)
    optim = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    schedule = get_cosine_with_min_lr_schedule_with_warmup(optim, cfg.warmup, max(1, cfg.steps),
                                                          min_lr_rate=MIN_LR_RATE)
    accelerator.register_save_state_pre_hook(_keep_trainable)
    accelerator.register_load_state_pre_hook(_load_trainable)
    wrapped, optim, schedule = accelerator.prepare(model, optim, schedule)

    lock = FolderLock(cfg.out, "training run") if accelerator.is_main_process else contextlib.nullcontext()
    with lock:
        return _fit(cfg, accelerator, wrapped, optim, schedule, draw, val, desc, objective, metrics,
                    on_fresh_start, validate_first)


def _load_resume_point(accelerator, folder: str) -> dict:
    """``accelerator.load_state`` (which unpickles nothing: accelerate reads optimizer, scheduler and
    RNG files with torch's weights-only unpickler, weights through the safetensors hook above)."""
    progress = read_json(os.path.join(folder, PROGRESS), f"delete {folder} to start the run over")
    try:
        accelerator.load_state(folder)
    except ConfigError:
        raise
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, KeyError, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else err.__class__.__name__
        raise ConfigError(f"the resume point {folder} cannot be read safely ({reason}): delete it to start the run "
                          "over, or use another --out") from None
    return progress


def _fit(cfg, accelerator, wrapped, optim, schedule, draw, val, desc, objective, metrics, on_fresh_start,
         validate_first) -> Fitted:
    world, rank = accelerator.num_processes, accelerator.process_index
    log_path = os.path.join(cfg.out, "log.jsonl")
    step, elapsed = 0, 0.0
    resume = resume_folder(cfg.out)
    if resume is not None:
        progress = _load_resume_point(accelerator, resume)
        step, elapsed = progress["step"], progress["elapsed"]
        logger.info("resuming %s at step %d", cfg.out, step)
        if accelerator.is_main_process:
            cut_log(log_path, step)
    elif accelerator.is_main_process:
        if os.path.isfile(log_path):
            os.remove(log_path)
        write_json(os.path.join(cfg.out, "train_config.json"), dataclasses.asdict(cfg))

    def validate() -> dict:
        wrapped.eval()
        losses, first = [], []
        with torch.no_grad():
            for i in range(0, len(val), 8):
                out = wrapped(val[i:i + 8])
                losses += out.losses.tolist()
                first += list(out.first)
        wrapped.train()
        return metrics(val, losses, first)

    def log(row: dict) -> None:
        if accelerator.is_main_process:
            append_log(log_path, row)

    start_time = time.perf_counter() - elapsed
    if step == 0:
        row = on_fresh_start() if on_fresh_start is not None else None
        if row:
            log({"step": 0, **row})
        if validate_first:
            log({"step": 0, **validate()})
    last = min(cfg.steps, cfg.stop_after or cfg.steps)
    bar = tqdm(total=last, initial=step, desc=desc, unit="step", disable=not accelerator.is_main_process)
    wrapped.train()
    micro = cfg.batch_size // cfg.grad_accum
    while step < last:
        rng = np.random.default_rng([cfg.seed, step])
        examples = draw(rng, cfg.batch_size * world)[rank::world]  # N processes share one draw
        lr = optim.param_groups[-1]["lr"]
        total = 0.0
        for m in range(cfg.grad_accum):
            with accelerator.accumulate(wrapped):
                loss = objective(wrapped(examples[m * micro:(m + 1) * micro]))
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(wrapped.parameters(), 1.0)
                optim.step()
                optim.zero_grad()
            total += loss.item() / cfg.grad_accum
        schedule.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}")
        row = {"step": step, "loss": total, "lr": lr, "time": time.perf_counter() - start_time}
        held = step % cfg.eval_every == 0 or step == last
        if held:
            row.update(validate())
            logger.info("step %d: %s", step, {k: round(v, 3) for k, v in row.items() if k.startswith("val")})
        if step % cfg.log_every == 0 or held:
            log(row)
        if step % cfg.save_every == 0 or step == last:
            save_resume_point(accelerator, cfg.out, step, time.perf_counter() - start_time)
    bar.close()
    minutes = round((time.perf_counter() - start_time) / 60, 1)
    return Fitted(step, minutes, accelerator, accelerator.unwrap_model(wrapped))


def logged(out: str, key: str) -> Optional[dict]:
    """The first row of the run's log that has ``key`` (without its step), or None."""
    row = next((r for r in read_log(os.path.join(out, "log.jsonl")) if key in r), None)
    return row and {k: v for k, v in row.items() if k != "step"}


def process_device() -> str:
    """This process's device as accelerate sees it: ``cuda:RANK`` under ``accelerate launch`` on GPUs,
    ``cuda`` on one GPU, else ``cpu``. For trainers that load their model before ``fit``."""
    from accelerate import PartialState

    return str(PartialState(cpu=not torch.cuda.is_available()).device)
