"""Paired bootstrap over questions for an `aim icl-eval` run: each method's accuracy and its difference
from zero-shot and from text-only, with 95% intervals, for one seed.

    python benchmarks/paired_bootstrap.py runs/easy-vqa-aligned/image-select/samples.jsonl --seed 0

Useful where seeds do not vary the demonstrations (``--select image``: retrieval is deterministic, so
the spread over seeds is zero and says nothing): the questions are then the only source of spread.
Prints a table and writes it as JSON next to --out.
"""
import argparse
import collections
import json
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples")
    ap.add_argument("--seed", type=int, default=0, help="the run's seed whose samples are compared")
    ap.add_argument("--metric", default="vqa_accuracy")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--out", default=None, help="JSON file for the table (default: none)")
    args = ap.parse_args()
    scores = collections.defaultdict(dict)
    with open(args.samples) as f:
        for line in f:
            row = json.loads(line)
            if row["seed"] == args.seed or row["method"] == "zero":
                scores[(row["method"], row["shots"])][row["id"]] = row[args.metric]
    zero = scores.get(("zero", 0))
    if not zero:
        raise SystemExit(f"{args.samples}: no zero-shot samples to compare against")
    ids = sorted(zero)
    picks = np.random.default_rng(0).integers(0, len(ids), size=(args.resamples, len(ids)))

    def interval(values: np.ndarray) -> dict:
        means = values[picks].mean(1)
        return {"mean": float(values.mean()), "low": float(np.percentile(means, 2.5)),
                "high": float(np.percentile(means, 97.5))}

    def column(method, k):
        cell = scores.get((method, k), {})
        return np.array([cell[i] for i in ids]) if all(i in cell for i in ids) else None

    table = {"zero": interval(column("zero", 0))}
    for k in sorted({k for _, k in scores if k}):
        text, fused = column("text", k), column("fused", k)
        for name in ("raw", "text", "fused"):
            values = column(name, k)
            if values is not None:
                table[f"{name} k={k}"] = interval(values)
                table[f"{name} k={k} - zero"] = interval(values - column("zero", 0))
        if text is not None and fused is not None:
            table[f"fused - text k={k}"] = interval(fused - text)
    print(f"{len(ids)} questions, seed {args.seed}, {args.metric}, paired bootstrap ({args.resamples} resamples)")
    print("| quantity | mean | 95% interval |\n|---|---|---|")
    for name, v in table.items():
        print(f"| {name} | {v['mean']:+.3f} | [{v['low']:+.3f}, {v['high']:+.3f}] |")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "questions": len(ids), "table": table}, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
