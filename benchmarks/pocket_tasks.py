"""The AIM paper's task kinds on the pocket backbone, each through `aim icl-eval`: captioning (CIDEr),
10-way rank classification (accuracy) and a binary task scored by ROC-AUC; zero-shot against raw,
text-only and fused demonstrations over shots and 3 seeds.

    .venv/bin/python benchmarks/pocket_tasks.py            # about 45 min on 2 cores
    .venv/bin/python benchmarks/pocket_tasks.py --n 20 --seeds 0 --tasks fmnist-rank   # a quick look

Each task is one `aim icl-eval` command (printed, resumable: run the script again after an
interrupt); the figures are collected into benchmarks/results/pocket_tasks.json and plotted into
docs/pocket_tasks.png (the task's own metric against shots, one panel per task).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TASKS = {
    "easy-vqa-captions": ["--dataset", "easy-vqa-captions:test", "--pool", "easy-vqa-captions:train",
                          "--shots", "0,4,8,16", "--max-new-tokens", "12"],
    "fmnist-captions": ["--dataset", "fashion-mnist-captions:test", "--pool", "fashion-mnist-captions:train",
                        "--shots", "0,4,8,16", "--max-new-tokens", "12"],
    "fmnist-rank": ["--dataset", "fashion-mnist:test", "--pool", "fashion-mnist:train", "--scoring", "likelihood",
                    "--shots", "0,4,8"],
    "easy-vqa-yesno-auc": ["--dataset", "easy-vqa-yesno:test", "--pool", "easy-vqa-yesno:train",
                           "--scoring", "likelihood", "--shots", "0,4,8"],
    # label binding episodes bring their own demonstrations (no pool); the same cells as generated
    # answers in docs/pocket-backbone.md, scored by likelihood over the episode's two words
    "binding-2way-likelihood": ["--dataset", "fashion-mnist-binding-2way:test", "--scoring", "likelihood",
                                "--shots", "0,4,8"],
}


def run_task(name: str, args) -> dict:
    aim = os.path.join(os.path.dirname(sys.executable), "aim")
    pool = ["--pool-limit", str(args.pool)] if "--pool" in TASKS[name] else []
    cmd = [aim, "icl-eval", *TASKS[name], "--limit", str(args.n), *pool,
           "--methods", "zero,raw,text,fused", "--seeds", args.seeds, "--batch-size", "16",
           "--output", args.runs, "--run-id", name, "--quiet"]
    print("$", " ".join(cmd[1:]), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    print(out.stdout, flush=True)
    with open(os.path.join(args.runs, name, "results.json")) as f:
        return json.load(f)


def summary(doc: dict) -> dict:
    """Per method and shots: the figures of every metric (mean, std) and prompt tokens."""
    (rows,) = doc["results"].values()
    table = {}
    for method, row in rows.items():
        table[method] = {k: {**{m: {"mean": c[m]["mean"], "std": c[m]["std"]} for m in doc["metrics"] if m in c},
                             "prompt_tokens": c.get("prompt_tokens")}
                         for k, c in row.items() if c.get("status") == "ok"}
    return {"metric": doc["metric"], "metrics": doc["metrics"], "scorers": doc["scorers"], "n": doc["configuration"]["limit"],
            "seeds": doc["seeds_run"], "table": table, "seconds": doc["seconds"]}


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        metric = res["metric"]
        for number, (method, row) in enumerate(res["table"].items()):
            shots = sorted(int(k) for k in row)
            ax.errorbar(shots, [row[str(k)][metric]["mean"] for k in shots],
                        yerr=[row[str(k)][metric]["std"] for k in shots], capsize=3, label=method,
                        marker="osD^"[number % 4], linestyle="--" if method == "zero" else "-")
        ax.set_title(f"{name}: {metric}")
        ax.set_xlabel("shots")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="queries per task")
    parser.add_argument("--pool", type=int, default=500, help="demonstration pool size")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "pocket-tasks"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "pocket_tasks.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "pocket_tasks.png"))
    args = parser.parse_args()
    results = {}
    if os.path.isfile(args.out):
        with open(args.out) as f:
            results = json.load(f).get("tasks", {})
    for name in args.tasks.split(","):
        results[name] = summary(run_task(name, args))
        with open(args.out, "w") as f:
            json.dump({"tasks": results, "command": " ".join(sys.argv)}, f, indent=2)
    plot(results, args.plot)
    print(f"figures: {args.out}; plot: {args.plot}")


if __name__ == "__main__":
    main()
