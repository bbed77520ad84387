"""Label binding with made-up words on Fashion-MNIST test images (or, with --source patterns, procedural
textures no checkpoint saw): can the backbone learn in context,
and do fused demonstrations carry what raw ones do?

    python benchmarks/label_binding.py --backbone pocket --n 200 --seeds 0,1,2

Each query is a test image of one of `ways` classes; its demonstrations (other test images of the
same classes, balanced) are labelled with words from the held-out pool (never seen in training),
drawn afresh per query, so only the demonstrations tell which word is which. Methods as `aim icl-eval`
runs them (zero, raw, text, fused; exact match), plus a reference that needs no language model: the
nearest demonstration by the pooled image features (1-NN, cosine). 2-way at k = 4, 8 and 5-way at
k = 5, 10. Writes benchmarks/results/label_binding.json and prints a table (mean ± std over seeds).
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
from aim.fusion import load_fuser  # noqa: E402
from aim.data.binding import SOURCES, episode_demos  # noqa: E402
from aim.data.spec import load_records  # noqa: E402
from aim.eval.config import IclEvalConfig  # noqa: E402
from aim.eval.runner import icl_eval  # noqa: E402

TASKS = {2: (4, 8), 5: (5, 10)}


@torch.no_grad()
def nearest_neighbour(backbone, records, k: int, seed: int) -> float:
    """Accuracy of answering with the word of the demonstration whose pooled image features are
    closest (cosine) to the query's."""
    right = []
    for r in records:
        demos = episode_demos(r, k, seed)
        feats = torch.nn.functional.normalize(backbone.image_features([r.image] + [d.image for d in demos]).float(), dim=-1)
        best = int((feats[1:] @ feats[0]).argmax())
        right.append(demos[best].answer == r.answer)
    return float(np.mean(right))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="pocket")
    ap.add_argument("--fuser", default=None, help="fuser folder (default: the one that ships for the backbone)")
    ap.add_argument("--methods", default="zero,raw,text,fused")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ways", default="2,5")
    ap.add_argument("--source", default="fashion-mnist", choices=SOURCES,
                    help="images: Fashion-MNIST test, or procedural textures no checkpoint saw (aim/data/patterns.py)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--runs", default="runs/label-binding")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "label_binding.json"))
    args = ap.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    methods = tuple(args.methods.split(","))

    backbone = load_backbone(args.backbone)
    fuser = load_fuser(args.fuser, backbone) if "fused" in methods else None
    result = {"args": vars(args), "backbone": backbone.fingerprint(), "tasks": {}}
    rows = []
    for ways in (int(w) for w in args.ways.split(",")):
        spec = f"{args.source}-binding-{ways}way:test"
        records = load_records(spec, args.n)
        start = time.perf_counter()
        cfg = IclEvalConfig(dataset=spec, methods=methods, shots=(0,) + TASKS[ways], seeds=seeds, limit=args.n,
                            batch_size=args.batch_size)
        doc = icl_eval(backbone, records, cfg, args.runs, fuser=fuser)
        task = {"results": doc["results"][spec], "seconds": time.perf_counter() - start, "nearest_neighbour": {}}
        for k in TASKS[ways]:
            per_seed = [nearest_neighbour(backbone, records, k, s) for s in seeds]
            task["nearest_neighbour"][str(k)] = {"mean": float(np.mean(per_seed)), "std": float(np.std(per_seed, ddof=1))
                                                 if len(per_seed) > 1 else 0.0, "per_seed": per_seed}
        result["tasks"][f"{ways}-way"] = task
        for k in TASKS[ways]:
            row = {"task": f"{ways}-way k={k}", "chance": 1 / ways}
            for m in methods:
                cell = task["results"][m][str(k)]
                row[m] = (cell["accuracy"]["mean"], cell["accuracy"]["std"], cell["prompt_tokens"]) \
                    if cell.get("status") == "ok" else None
            nn = task["nearest_neighbour"][str(k)]
            row["1-NN"] = (nn["mean"], nn["std"], None)
            rows.append(row)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)

    cols = list(methods) + ["1-NN"]
    print(f"\nlabel binding on {args.source}, {args.n} queries per cell, seeds {args.seeds}: exact match mean ± std (prompt tokens)")
    print("| task (chance) | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append("n/a" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}" + (f" ({v[2]:.0f})" if v[2] else ""))
        print(f"| {row['task']} ({row['chance']:.2f}) | " + " | ".join(cells) + " |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
