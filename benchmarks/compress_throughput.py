"""compress-demos throughput against a plain batched forward pass of the same backbone over the same
demonstrations, side by side in one run.

    .venv/bin/python benchmarks/compress_throughput.py --n 128 --batch-size 8

"plain": images loaded, each demonstration encoded (image + text, as read_demos reads it) and the
backbone run with hidden states, batch by batch: the least any compression must do. "compress":
``aim.compress_demos`` into a fresh bank (a linear fuser at layer 15, image keys, shards written
and committed). Each is timed twice, alternating, and the better time is kept.

Bank read time per query: the last bank built is opened (``DemoBank.open``: manifest, shard check) and
the fused tokens of k randomly chosen demonstrations are read (``DemoBank.fused``, memory-mapped), for
each k in ``--read-shots``; the first read after opening (which also indexes the metadata and opens the
shards) is reported apart, the rest are medians over ``--read-repeats`` draws. Writes
benchmarks/results/compress_throughput.json.
"""
import argparse
import json
import os
import random
import statistics
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


def compress(backbone, fuser, records, batch_size, folder):
    start = time.perf_counter()
    aim.compress_demos(backbone, fuser, records, folder, batch_size=batch_size, shard_size=64, progress=False)
    return time.perf_counter() - start


def bank_reads(folder, shots, repeats, seed=0):
    """Milliseconds to open the bank and read its first query's demonstrations, then per k the median
    time to read the fused tokens of k random demonstrations."""
    rng = random.Random(seed)
    start = time.perf_counter()
    bank = aim.DemoBank.open(folder)
    ids = bank.ids()
    first = [bank.fused(i) for i in rng.sample(ids, min(shots))]
    out = {"open_and_first_read_ms": 1000 * (time.perf_counter() - start), "first_read_shots": min(shots),
           "bank_demos": len(bank), "per_shots": {}}
    for k in shots:
        times, tokens = [], []
        for _ in range(repeats):
            chosen = rng.sample(ids, k) if k <= len(ids) else [rng.choice(ids) for _ in range(k)]
            start = time.perf_counter()
            fused = [bank.fused(i) for i in chosen]
            times.append(time.perf_counter() - start)
            tokens.append(sum(f.shape[0] for f in fused))
        out["per_shots"][k] = {"ms_per_query": 1000 * statistics.median(times), "fused_tokens": statistics.mean(tokens),
                               "bytes": statistics.mean(tokens) * first[0].shape[1] * first[0].element_size()}
    del first
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--read-shots", default="16,32,64", help="bank read time per query for these k")
    ap.add_argument("--read-repeats", type=int, default=50, help="bank reads are medians over this many draws")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "compress_throughput.json"))
    args = ap.parse_args()
    backbone = aim.load_backbone("pocket")
    fuser = aim.Fuser.for_backbone(backbone, layer=15)
    records = aim.load_records("easy-vqa:train", args.n)
    times = {"plain": [], "compress": []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(2):
            times["plain"].append(plain(backbone, records, args.batch_size))
            times["compress"].append(compress(backbone, fuser, records, args.batch_size, os.path.join(tmp, str(run))))
        reads = bank_reads(os.path.join(tmp, "1"), [int(k) for k in args.read_shots.split(",")], args.read_repeats)
    best = {k: min(v) for k, v in times.items()}
    rate = {k: args.n / v for k, v in best.items()}
    result = {"command": ".venv/bin/python benchmarks/compress_throughput.py " + " ".join(sys.argv[1:]),
              "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average_end": os.getloadavg(),
              "n": args.n, "batch_size": args.batch_size, "threads": torch.get_num_threads(), "seconds": times,
              "demos_per_second": rate, "compress_over_plain_time": best["compress"] / best["plain"],
              "bank_read": reads}
    print("| pass | demos/s | time (best of 2) |")
    print("|---|---|---|")
    for k in ("plain", "compress"):
        print(f"| {k} | {rate[k]:.2f} | {best[k]:.1f} s |")
    print(f"compress takes {result['compress_over_plain_time']:.2f}x the plain forward's time")
    print(f"bank open + first read of {reads['first_read_shots']} demos: {reads['open_and_first_read_ms']:.1f} ms")
    print("| shots | bank read (ms/query) | fused tokens | bytes |")
    print("|---|---|---|---|")
    for k, r in reads["per_shots"].items():
        print(f"| {k} | {r['ms_per_query']:.2f} | {r['fused_tokens']:.0f} | {r['bytes'] / 1024:.0f} KiB |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
