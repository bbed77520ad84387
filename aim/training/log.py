"""A training run's record: one JSON row per logged step in ``log.jsonl``, and its loss curve."""
from __future__ import annotations

import json
import os

import numpy as np


def append_log(path: str, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_log(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def cut_log(path: str, step: int) -> None:
    """Keep the rows logged up to ``step`` (a run resumed there logs the later ones again)."""
    keep = [r for r in read_log(path) if r["step"] <= step]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)


def plot_loss(log_path: str, png_path: str, title: str) -> None:
    """Loss against step (raw and smoothed) and every held-out loss, from the JSONL log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    train = [r for r in rows if "loss" in r]
    if not train:
        return
    steps = [r["step"] for r in train]
    loss = np.array([r["loss"] for r in train])
    window = max(1, len(loss) // 20)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, alpha=0.3, label="loss")
    ax.plot(steps[window - 1:], smooth, label=f"mean of {window}")
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
