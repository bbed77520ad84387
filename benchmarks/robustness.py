"""Label binding away from the training format: does the backbone learn in context on a task of the
user's own, and do fused demonstrations keep up with raw ones?

    python benchmarks/robustness.py --n 100 --seeds 0,1,2

Every cell is an `aim icl-eval` run over label-binding episodes (aim/data/binding.py), whose dataset
spec the table prints so it can be re-run alone, e.g.
    aim icl-eval --dataset "emoji-binding-2way+words=pseudo+question=held-out+draw=random:test" \\
        --limit 100 --methods zero,text,raw,fused --shots 8 --seeds 0,1,2
Conditions (rows): the training format (Fashion-MNIST test images, consonant-vowel test words, "What
is this?", balanced demonstrations); each held-out image set (emoji, digits, silhouettes: no
checkpoint trained on them) with held-out words (ordinary-looking made-up words), held-out question
wordings and random draws all at once; and on Fashion-MNIST one held-out factor at a time. Tasks:
2-way k=8 and 5-way k=10. Methods: zero, text, raw, fused (exact match, mean ± std over seeds), and
a reference that needs no language model: the class whose demonstrations' mean image feature
(`Backbone.image_features`, cosine) is nearest the query's, over the same demonstrations (classes
absent from a random draw cannot be chosen, as for the model). Writes
benchmarks/results/robustness.json, prints a markdown table, and plots raw, fused and the reference.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aim import load_backbone  # noqa: E402
from aim.data.binding import episode_demos  # noqa: E402
from aim.data.spec import load_records  # noqa: E402
from aim.eval.config import IclEvalConfig  # noqa: E402
from aim.eval.runner import icl_eval  # noqa: E402
from aim.fusion import load_fuser  # noqa: E402

HELD_OUT = "+words=pseudo+question=held-out+draw=random"
CONDITIONS = {
    "training format (Fashion-MNIST)": "fashion-mnist-binding-{w}way",
    "held-out: emoji": "emoji-binding-{w}way" + HELD_OUT,
    "held-out: digits": "digits-binding-{w}way" + HELD_OUT,
    "held-out: silhouettes": "silhouettes-binding-{w}way" + HELD_OUT,
    "Fashion-MNIST: held-out words": "fashion-mnist-binding-{w}way+words=pseudo",
    "Fashion-MNIST: held-out wordings": "fashion-mnist-binding-{w}way+question=held-out",
    "Fashion-MNIST: random draws": "fashion-mnist-binding-{w}way+draw=random",
}
#: unseen images of two training sets (test splits), random draws: a check during training that
#: reads none of the held-out conditions above
DEV = {
    "dev: clipart test images": "clipart-binding-{w}way+draw=random",
    "dev: photo crops test": "photos-binding-{w}way+draw=random",
}
TASKS = {2: 8, 5: 10}


@torch.no_grad()
def references(backbone, records, k: int, seed: int) -> dict:
    """Accuracy of two feature references on each record's k demonstrations: the nearest class mean
    (prototype) and the nearest single demonstration (1-NN), cosine on pooled image features."""
    proto, nn = [], []
    for r in records:
        demos = episode_demos(r, k, seed)
        feats = torch.nn.functional.normalize(backbone.image_features([r.image] + [d.image for d in demos]).float(),
                                              dim=-1)
        query, rows = feats[0], feats[1:]
        words = sorted({d.answer for d in demos})
        means = torch.stack([rows[[i for i, d in enumerate(demos) if d.answer == w]].mean(0) for w in words])
        proto.append(words[int((torch.nn.functional.normalize(means, dim=-1) @ query).argmax())] == r.answer)
        nn.append(demos[int((rows @ query).argmax())].answer == r.answer)
    return {"class_mean": float(np.mean(proto)), "nearest": float(np.mean(nn))}


def summary(values: list) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "per_seed": [float(v) for v in values]}


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(6 * len(TASKS), 4.8), sharey=True)
    for ax, ways in zip(np.atleast_1d(axes), TASKS):
        rows = [c for c in result["cells"] if c["ways"] == ways]
        x = np.arange(len(rows))
        for i, (key, label) in enumerate((("raw", "raw"), ("fused", "fused"), ("text", "text-only"),
                                          ("class_mean", "image-feature reference"))):
            vals = [c["methods"].get(key, c["reference"].get(key, {})).get("mean", np.nan) for c in rows]
            ax.bar(x + (i - 1.5) * 0.2, vals, 0.2, label=label)
        ax.axhline(1 / ways, color="gray", linestyle=":", linewidth=1)
        ax.set_xticks(x, [c["condition"].replace(": ", ":\n").replace(", ", ",\n") for c in rows], fontsize=7)
        ax.set_title(f"{ways}-way, k={TASKS[ways]}")
        ax.set_ylim(0, 1)
    np.atleast_1d(axes)[0].set_ylabel("exact match (mean of seeds)")
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="pocket")
    ap.add_argument("--fuser", default=None, help="fuser folder (default: the one that ships for the backbone)")
    ap.add_argument("--methods", default="zero,text,raw,fused")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--conditions", default=",".join(CONDITIONS),
                    help="comma-separated names of CONDITIONS (or DEV), or 'dev' for the DEV ones")
    ap.add_argument("--ways", default="2,5")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--runs", default="runs/robustness")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "robustness.json"))
    ap.add_argument("--plot", default=None, help="PNG path (default: beside --out)")
    args = ap.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    methods = tuple(args.methods.split(","))
    table = {**CONDITIONS, **DEV}
    conditions = list(DEV) if args.conditions == "dev" else [c for c in args.conditions.split(",") if c]
    unknown = [c for c in conditions if c not in table]
    if unknown:
        raise SystemExit(f"unknown condition(s) {unknown}: use some of {list(table)}, or dev")

    backbone = load_backbone(args.backbone)
    fuser = load_fuser(args.fuser, backbone) if "fused" in methods else None
    result = {"args": vars(args), "backbone": backbone.fingerprint(), "cells": []}
    for condition in conditions:
        for ways in (int(w) for w in args.ways.split(",")):
            k = TASKS[ways]
            spec = table[condition].format(w=ways) + ":test"
            records = load_records(spec, args.n)
            start = time.perf_counter()
            cfg = IclEvalConfig(dataset=spec, methods=methods, shots=(k,) if "zero" not in methods else (0, k),
                                seeds=seeds, limit=args.n, batch_size=args.batch_size)
            doc = icl_eval(backbone, records, cfg, args.runs, fuser=fuser)
            cells = doc["results"][spec]
            refs = [references(backbone, records, k, s) for s in seeds]
            cell = {"condition": condition, "ways": ways, "shots": k, "spec": spec, "n": len(records),
                    "methods": {}, "prompt_tokens": {},
                    "reference": {key: summary([r[key] for r in refs]) for key in ("class_mean", "nearest")},
                    "seconds": round(time.perf_counter() - start, 1)}
            for m in methods:
                c = cells[m]["0" if m == "zero" else str(k)]
                if c.get("status") == "ok":
                    cell["methods"][m] = c["accuracy"]
                    cell["prompt_tokens"][m] = c["prompt_tokens"]
            result["cells"].append(cell)
            os.makedirs(os.path.dirname(args.out), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)
            print(f"{condition}, {ways}-way k={k}: " + ", ".join(f"{m} {v['mean']:.3f}" for m, v in
                                                                 cell["methods"].items())
                  + f", reference {cell['reference']['class_mean']['mean']:.3f} ({cell['seconds']:.0f} s)", flush=True)

    cols = [m for m in ("zero", "text", "raw", "fused") if m in methods]
    print(f"\nlabel binding, {args.n} queries per cell, seeds {args.seeds}: exact match mean ± std")
    print("| condition | task | " + " | ".join(cols) + " | reference (class mean) | raw - ref | fused - raw |")
    print("|---|---|" + "---|" * (len(cols) + 3))
    for c in result["cells"]:
        m, ref = c["methods"], c["reference"]["class_mean"]["mean"]
        vals = [f"{m[x]['mean']:.3f} ± {m[x]['std']:.3f}" if x in m else "n/a" for x in cols]
        gap = f"{m['raw']['mean'] - ref:+.3f}" if "raw" in m else "n/a"
        fused = f"{m['fused']['mean'] - m['raw']['mean']:+.3f}" if "raw" in m and "fused" in m else "n/a"
        print(f"| {c['condition']} | {c['ways']}-way k={c['shots']} | " + " | ".join(vals)
              + f" | {ref:.3f} ± {c['reference']['class_mean']['std']:.3f} | {gap} | {fused} |")
    path = args.plot or os.path.splitext(args.out)[0] + ".png"
    plot(result, path)
    print(f"\nwrote {args.out} and {path}")


if __name__ == "__main__":
    main()
