"""compress-demos throughput against a plain batched forward pass of the same backbone over the same
demonstrations, side by side in one run.

    .venv/bin/python benchmarks/compress_throughput.py --n 128 --batch-size 8

"plain": images loaded, each demonstration encoded (image + text, as read_demos reads it) and the
backbone run with hidden states, batch by batch: the least any compression must do. "compress":
``aim.compress_demos`` into a fresh bank (a linear fuser at layer 15, image keys, shards written
and committed). Each is timed twice, alternating, and the better time is kept. Writes
benchmarks/results/compress_throughput.json.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import aim  # noqa: E402
from aim.images import load_image  # noqa: E402


def plain(backbone, records, batch_size):
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(records), batch_size):
            part = records[i:i + batch_size]
            bodies = [[load_image(r.image), backbone.demo_text(aim.Demo(None, r.question, r.answer))] for r in part]
            backbone.run(backbone.encode(bodies, generation=False), hidden_states=True)
    return time.perf_counter() - start


def compress(backbone, fuser, records, batch_size):
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        aim.compress_demos(backbone, fuser, records, tmp, batch_size=batch_size, shard_size=64, progress=False)
        return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "compress_throughput.json"))
    args = ap.parse_args()
    backbone = aim.load_backbone("pocket")
    fuser = aim.Fuser.for_backbone(backbone, layer=15)
    records = aim.load_records("easy-vqa:train", args.n)
    times = {"plain": [], "compress": []}
    for _ in range(2):
        times["plain"].append(plain(backbone, records, args.batch_size))
        times["compress"].append(compress(backbone, fuser, records, args.batch_size))
    best = {k: min(v) for k, v in times.items()}
    rate = {k: args.n / v for k, v in best.items()}
    result = {"n": args.n, "batch_size": args.batch_size, "threads": torch.get_num_threads(), "seconds": times,
              "demos_per_second": rate, "compress_over_plain_time": best["compress"] / best["plain"]}
    print("| pass | demos/s | time (best of 2) |")
    print("|---|---|---|")
    for k in ("plain", "compress"):
        print(f"| {k} | {rate[k]:.2f} | {best[k]:.1f} s |")
    print(f"compress takes {result['compress_over_plain_time']:.2f}x the plain forward's time")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
