"""The accuracy-cost frontier: every way of giving a frozen backbone demonstrations, on one backbone
and the same data, in one run per task.

    python benchmarks/frontier.py --tasks binding2,binding5,easyvqa,textures --n 100 --seeds 0,1,2

Methods, each an `aim icl-eval` method:
- `zero`, `text`, `raw` (the k-shot prompt itself);
- `fused` with each AIM design: the base fuser (`--fuser`, default the backbone's shipped one), a
  label-free fit of it on the task's own demonstration pool (`aim.fusion.pool_fit`, as
  `compress-demos --fit-on-pool`), and any fuser folder given as `--fusers name=FOLDER` (the paper's
  pure projection, pooled to 4 or 1 token, prepend: trained with `aim train fuser`, whose options
  docs/training.md lists);
- the vector methods `live`, `mimic`, `mtv` (aim/vectors), each fitted first on the task's
  training split (`runs/frontier/TASK/METHOD`, reused when present) with what that cost recorded.

Tasks: label binding on Fashion-MNIST test images with held-out words (2-way k=8, 5-way k=10),
easy-VQA (test questions, demonstrations from the train pool, 8 and 32 shots), unseen procedural
textures (2-way k=8). Per cell: accuracy (mean ± std over seeds), prompt tokens, whole-answer
latency and peak memory per query; per method: preparation (minutes, examples read). Writes
benchmarks/results/frontier.json, a markdown table per task, and one plot per task (accuracy against
prompt tokens and against latency) as benchmarks/results/frontier_TASK.png.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aim import load_backbone  # noqa: E402
from aim.data.binding import episode_demos  # noqa: E402
from aim.data.spec import load_records  # noqa: E402
from aim.eval.config import IclEvalConfig  # noqa: E402
from aim.eval.runner import icl_eval  # noqa: E402
from aim.fusion import Fuser, load_fuser  # noqa: E402
from aim.fusion.pool_fit import fit_on_pool  # noqa: E402
from aim.vectors import VectorConfig, VectorTrainConfig, load_vectors, train_vectors  # noqa: E402

TASKS = {
    "binding2": {"dataset": "fashion-mnist-binding-2way+words=pseudo:test", "train": "fashion-mnist-binding-2way:train",
                 "shots": (8,), "title": "label binding, Fashion-MNIST, held-out words, 2-way k=8"},
    "binding5": {"dataset": "fashion-mnist-binding-5way+words=pseudo:test", "train": "fashion-mnist-binding-5way:train",
                 "shots": (10,), "title": "label binding, Fashion-MNIST, held-out words, 5-way k=10"},
    "easyvqa": {"dataset": "easy-vqa:test", "pool": "easy-vqa:train", "train": "easy-vqa:train", "shots": (8, 32),
                "title": "easy-VQA, test questions, random demonstrations from train"},
    "textures": {"dataset": "patterns-binding-2way:test", "train": "patterns-binding-2way:train", "shots": (8,),
                 "title": "label binding, procedural textures (test split), 2-way k=8"},
}
VECTORS = ("live", "mimic", "mtv")


def episode_pool(records: list, k: int, seeds: tuple) -> list:
    """The demonstrations label-binding episodes show (their images and texts): the pool a bank of
    them would hold, for the label-free fit."""
    seen, pool = set(), []
    for r in records:
        for seed in seeds:
            for d in episode_demos(r, k, seed):
                if d.id not in seen:
                    seen.add(d.id)
                    pool.append(d)
    return pool


def prepare_vectors(backbone, task: dict, method: str, folder: str, args) -> dict:
    """Fit (or reuse) one task's vectors; returns the folder and what making them cost."""
    if not os.path.isfile(os.path.join(folder, "vector_config.json")):
        shots = 4 if method == "mtv" else min(task["shots"])
        cfg = VectorTrainConfig(out=folder, vector=VectorConfig(method=method), data=task["train"], shots=shots,
                                steps=args.vector_steps, batch_size=args.vector_batch, val_examples=16,
                                eval_every=max(1, args.vector_steps // 2), save_every=10,
                                mean_prompts=args.mean_prompts)
        train_vectors(backbone, cfg)
    made = load_vectors(folder, backbone).config.training
    return {"folder": folder, "minutes": made["minutes"], "examples_read": made["examples_read"],
            "steps": made["steps_done"], "shots": made["shots"], "objective": made["objective"]}


def cell_figures(doc: dict, dataset: str, method: str, k: int) -> dict:
    cell = doc["results"][dataset][method][str(k)]
    if cell.get("status") != "ok":
        return {"status": cell.get("status"), "reason": cell.get("reason")}
    return {"status": "ok", "accuracy": cell["accuracy"]["mean"], "std": cell["accuracy"]["std"],
            "per_seed": cell["accuracy"]["per_seed"], "prompt_tokens": cell["prompt_tokens"],
            "latency_s": cell["latency_s"], "peak_memory_bytes": cell["peak_memory_bytes"]}


def run_task(backbone, name: str, task: dict, fusers: dict, args) -> dict:
    records = load_records(task["dataset"], args.n)
    pool = load_records(task["pool"], args.pool_limit) if task.get("pool") else None
    folder = os.path.join(args.runs, name)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    shots = task["shots"]
    prepared, vectors = {}, {}
    for method in [m for m in args.vectors.split(",") if m]:
        start = time.perf_counter()
        prepared[method] = prepare_vectors(backbone, task, method, os.path.join(folder, method), args)
        prepared[method]["seconds_this_run"] = round(time.perf_counter() - start, 1)
        vectors[method] = load_vectors(prepared[method]["folder"], backbone)

    shipped = load_fuser(args.fuser, backbone)
    fit_folder = os.path.join(folder, "fuser-pool-fit")
    if not os.path.isfile(os.path.join(fit_folder, "fusion_model.safetensors")):
        start = time.perf_counter()
        own_pool = pool if pool is not None else episode_pool(records, max(shots), seeds)
        refit = fit_on_pool(backbone, shipped, own_pool, demos=args.fit_demos)
        refit.config.training["minutes"] = round((time.perf_counter() - start) / 60, 2)
        refit.save_pretrained(fit_folder)
    every_fuser = {"base": shipped, "pool-fit": Fuser.from_pretrained(fit_folder, backbone=backbone)}
    every_fuser.update({n: load_fuser(f, backbone) for n, f in fusers.items()})

    result = {"title": task["title"], "dataset": task["dataset"], "n": len(records), "seeds": list(seeds),
              "shots": list(shots), "prepared": prepared, "cells": {}}
    base = ("zero", "text", "raw", "fused") + tuple(vectors)
    cfg = IclEvalConfig(dataset=task["dataset"], methods=base, shots=(0,) + shots, seeds=seeds, limit=args.n,
                        pool=task.get("pool"), pool_limit=args.pool_limit, batch_size=args.batch_size)
    doc = icl_eval(backbone, records, cfg, folder, run_id="base", fuser=shipped, pool=pool, vectors=vectors)
    result["cells"]["zero"] = {"0": cell_figures(doc, task["dataset"], "zero", 0)}
    for method in ("text", "raw"):
        result["cells"][method] = {str(k): cell_figures(doc, task["dataset"], method, k) for k in shots}
    result["cells"]["fused"] = {str(k): cell_figures(doc, task["dataset"], "fused", k) for k in shots}
    result["memory"] = doc["memory"]
    for method in vectors:
        result["cells"][method] = {"0": cell_figures(doc, task["dataset"], method, 0)}
    for fname, fuser in every_fuser.items():
        if fname == "base":
            continue
        cfg = IclEvalConfig(dataset=task["dataset"], methods=("fused",), shots=shots, seeds=seeds, limit=args.n,
                            pool=task.get("pool"), pool_limit=args.pool_limit, batch_size=args.batch_size)
        doc = icl_eval(backbone, records, cfg, folder, run_id=f"fused-{fname}", fuser=fuser, pool=pool)
        result["cells"][f"fused:{fname}"] = {str(k): cell_figures(doc, task["dataset"], "fused", k) for k in shots}
    return result


def markdown(name: str, result: dict) -> str:
    lines = [f"**{result['title']}** ({result['n']} queries, seeds {result['seeds']}; `fused`: the base fuser; "
             f"memory: {result.get('memory', {}).get('description', '')})", "",
             "| method | shots | accuracy | prompt tokens | latency / query | peak memory | preparation |",
             "|---|---|---|---|---|---|---|"]
    for method, row in result["cells"].items():
        prep = result["prepared"].get(method)
        made = f"{prep['minutes']} min, {prep['examples_read']} examples read" if prep else ""
        for k, c in row.items():
            if c.get("status") != "ok":
                lines.append(f"| {method} | {k} | {c.get('status')}: {c.get('reason')} | | | | {made} |")
                continue
            lines.append(f"| {method} | {k} | {c['accuracy']:.3f} ± {c['std']:.3f} | {c['prompt_tokens']:.0f} | "
                         f"{1000 * c['latency_s']:.0f} ms | {c['peak_memory_bytes'] / 2**20:.0f} MiB | {made} |")
    return "\n".join(lines)


def plot(name: str, result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, key, label in ((axes[0], "prompt_tokens", "prompt tokens per query"),
                           (axes[1], "latency_s", "whole-answer latency per query (s)")):
        for i, (method, row) in enumerate(result["cells"].items()):
            points = [(c[key], c["accuracy"], k) for k, c in row.items() if c.get("status") == "ok"]
            if not points:
                continue
            xs, ys, ks = zip(*points)
            ax.scatter(xs, ys, label=method, color=f"C{i % 10}", marker="os^Dv<>p*h"[i % 10])
            made = result["prepared"].get(method)  # vectors: the shots they stand in for
            for x, y, k in points:
                ax.annotate(f"~{made['shots']}" if made else k, (x, y), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("accuracy (mean of seeds)")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(result["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="pocket")
    ap.add_argument("--fuser", default=None, help="the base fuser (default: the one that ships with the backbone)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--n", type=int, default=100, help="queries per task (easy-VQA: the issue's figure is 500)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fusers", default="", help="more AIM designs: comma-separated name=FOLDER")
    ap.add_argument("--vectors", default=",".join(VECTORS), help="vector methods to fit and run (empty: none)")
    ap.add_argument("--vector-steps", type=int, default=100)
    ap.add_argument("--vector-batch", type=int, default=8)
    ap.add_argument("--mean-prompts", type=int, default=100, help="mtv: raw prompts averaged")
    ap.add_argument("--fit-demos", type=int, default=512, help="demonstrations of the label-free pool fit")
    ap.add_argument("--pool-limit", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--runs", default="runs/frontier")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "frontier.json"))
    args = ap.parse_args()
    fusers = dict(item.split("=", 1) for item in args.fusers.split(",") if item)
    backbone = load_backbone(args.backbone)
    out = {"args": vars(args), "backbone": backbone.fingerprint(), "tasks": {}}
    if os.path.isfile(args.out):
        with open(args.out) as f:
            previous = json.load(f)
        if previous.get("backbone") == out["backbone"]:
            out["tasks"] = previous.get("tasks", {})  # other tasks of an earlier run on this backbone stay
    for name in [t for t in args.tasks.split(",") if t]:
        if name not in TASKS:
            raise SystemExit(f"unknown task {name!r}: use some of {', '.join(TASKS)}")
        start = time.perf_counter()
        out["tasks"][name] = run_task(backbone, name, TASKS[name], fusers, args)
        out["tasks"][name]["seconds"] = round(time.perf_counter() - start, 1)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
        png = os.path.join(os.path.dirname(args.out), f"frontier_{name}.png")
        plot(name, out["tasks"][name], png)
        print("\n" + markdown(name, out["tasks"][name]) + f"\n\nplot: {png}", flush=True)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
