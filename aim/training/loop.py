"""Pieces every training run shares: a JSONL log, a loss-curve PNG, checkpoints to resume from."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress))))


def save_state(path: str, **state) -> None:
    """torch.save to a temporary name, then rename: a killed run never leaves half a checkpoint."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def resume_point(out: str) -> dict:
    """The run folder's last checkpoint (``out/state.pt``) as a dict, its log cut back to the rows
    logged up to it; or, for a fresh run, ``{"step": 0, "elapsed": 0.0}`` and no old log."""
    state_path, log_path = os.path.join(out, "state.pt"), os.path.join(out, "log.jsonl")
    if not os.path.isfile(state_path):
        if os.path.isfile(log_path):
            os.remove(log_path)
        return {"step": 0, "elapsed": 0.0}
    state = torch.load(state_path, weights_only=False)
    keep = [r for r in read_log(log_path) if r["step"] <= state["step"]]  # rows logged after it are redone
    with open(log_path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)
    return state


def accumulated_step(accelerator, model, optim, batch: list, grad_accum: int, loss_of) -> float:
    """One optimizer step over ``batch`` in ``grad_accum`` micro-batches (``loss_of(micro_batch)``
    -> loss), through accelerate: gradients accumulate, are clipped to norm 1.0 and applied once.
    Returns the step's mean loss."""
    micro = len(batch) // grad_accum
    total = 0.0
    for m in range(grad_accum):
        with accelerator.accumulate(model):
            loss = loss_of(batch[m * micro:(m + 1) * micro])
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            optim.zero_grad()
        total += loss.item() / grad_accum
    return total


def held_out(model, examples: list, outputs_of, size: int = 8) -> tuple[list, list]:
    """Per-example losses and first-token hits over ``examples`` in chunks of ``size``, without
    grad and in eval mode (``outputs_of(chunk)`` -> (loss, losses, first-token hits))."""
    model.eval()
    losses, first = [], []
    with torch.no_grad():
        for i in range(0, len(examples), size):
            _, chunk_losses, chunk_first = outputs_of(examples[i:i + size])
            losses += chunk_losses
            first += chunk_first
    model.train()
    return losses, first


def append_log(path: str, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_log(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_loss(log_path: str, png_path: str, title: str) -> None:
    """Loss against step (raw and smoothed) from the JSONL log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_log(log_path) if "loss" in r]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    loss = np.array([r["loss"] for r in rows])
    window = max(1, len(loss) // 20)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, alpha=0.3, label="loss")
    ax.plot(steps[window - 1:], smooth, label=f"mean of {window}")
    rows = read_log(log_path)
    for key in sorted({k for r in rows for k in r if k.startswith("val_loss")}):
        evals = [r for r in rows if key in r]
        label = "held-out loss" + (f" ({key[len('val_loss_'):]})" if key != "val_loss" else "")
        ax.plot([r["step"] for r in evals], [r[key] for r in evals], "o-", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
