"""IVF-PQ over a bank of 1M demonstrations, alone and re-ranked by the bank's exact keys, through
the library (`aim.FewShot(index_kind="ivfpq")`), against exact flat search.

    python benchmarks/ivfpq_rerank.py --size 1000000 --factors 1,4,16,64

Writes a DemoBank of ``--size`` demonstrations (one 4-wide fused token each, so the bank is mostly
its keys: 576-d clustered keys, near neighbours close together as image keys of one domain are),
then builds the index as `aim icl-eval --index ivfpq` does (`FewShot.index`: trained on a sample,
keys read a chunk at a time) and searches it with each re-rank factor: IVF-PQ asks for k x factor
candidates and `DemoBank.key_rows` reads those rows' exact keys from the bank's shards (memory-
mapped). Each search runs twice: first on freshly mapped shards (every row read faults its page
into this process; the files are in the page cache, having just been written or read), then after
every key page has been touched once, as a long evaluation reaches after enough queries. Figures:
recall@k against exact search, milliseconds per query, the build time, and the peak of the
process's own memory (anonymous resident memory, sampled every 20 ms: the memory-mapped bank files
are page cache the kernel can drop, not the process's) during the IVF-PQ build and searches and
while the exact search holds every key.
Writes benchmarks/results/ivfpq_rerank.json.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

import faiss
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retrieval_speed import ints, random_keys  # noqa: E402

from aim.api import FewShot  # noqa: E402
from aim.bank import DemoBank  # noqa: E402
from aim.retrieval import KeyIndex, recall_at_k  # noqa: E402

SHARD = 100_000


class PeakAnon:
    """The highest ``RssAnon`` of /proc/self/status (GiB) while the ``with`` block runs."""

    def __enter__(self):
        self.peak, self._stop = now_anon(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, now_anon())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, now_anon())


def now_anon() -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
    return kib / 2**20


def write_bank(folder: str, size: int, dim: int, data: str) -> None:
    bank = DemoBank.create(folder, {"family": "benchmark"}, {"kind": "benchmark"}, 4, storage="float16")
    rng = np.random.default_rng(0)
    token = torch.zeros(1, 4)
    for lo in range(0, size, SHARD):
        n = min(SHARD, size - lo)
        keys = torch.from_numpy(random_keys(n, dim, data, rng))
        bank.append([f"d{i}" for i in range(lo, lo + n)], [token] * n, [{"question": "q", "answers": ["a"]}] * n,
                    {"image": keys})
        print(f"bank: {lo + n:,} demonstrations written", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--data", default="clustered", choices=["clustered", "gaussian"])
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--nprobe", type=int, default=64)
    ap.add_argument("--factors", type=ints, default=[1, 4, 16, 64], help="candidates asked for, as multiples of k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bank", default=None, help="bank folder (default: a temporary one, removed at the end)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ivfpq_rerank.json"))
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    folder = args.bank or tempfile.mkdtemp(prefix="ivfpq-bank-")
    try:
        result = run(args, folder)
    finally:
        if args.bank is None:
            shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


def run(args, folder: str) -> dict:
    if not os.path.isfile(os.path.join(folder, "bank.json")):
        write_bank(folder, args.size, args.dim, args.data)
    bank = DemoBank.open(folder)
    queries = random_keys(args.queries, args.dim, args.data, np.random.default_rng(1))
    keys_gib = len(bank) * args.dim * 4 / 2**30
    before = now_anon()
    start = time.perf_counter()
    with PeakAnon() as build:
        index = FewShot(None, None, bank, index_kind="ivfpq").index("image")
    build_s = time.perf_counter() - start
    index.nprobe = min(args.nprobe, index.nlist)
    print(f"IVF-PQ build through FewShot.index: {build_s:.0f} s (nlist {index.nlist}, {index.pq_m} bytes a key); "
          f"peak own memory {build.peak:.2f} GiB (before: {before:.2f}; the keys: {keys_gib:.2f} GiB)", flush=True)
    exact_keys, factors = index.exact_keys, [None] + list(args.factors)

    def search(factor):
        index.exact_keys, index.rerank = (None, 1) if factor is None else (exact_keys, factor)
        start = time.perf_counter()
        _, ids = index.search(queries, args.k)
        return 1000 * (time.perf_counter() - start) / args.queries, ids

    with PeakAnon() as searching:
        first = [search(factor) for factor in factors]
        for m in bank._key_maps["image"]:
            float(m[:, 0].sum())  # one float of every row: every page of the keys is mapped now
        mapped = [search(factor) for factor in factors]
    start = time.perf_counter()
    with PeakAnon() as exact:
        flat = KeyIndex.build(bank.keys("image")[0].numpy(), kind="flat")
    flat_build_s = time.perf_counter() - start
    start = time.perf_counter()
    _, truth = flat.search(queries, args.k)
    flat_ms = 1000 * (time.perf_counter() - start) / args.queries
    rows = []
    print(f"{'search':32s} recall@{args.k}  ms/query (first pass, pages mapped)")
    for factor, (ms, ids), (again, _) in zip(factors, first, mapped):
        recall = recall_at_k(ids, truth)
        name = "IVF-PQ alone" if factor is None else f"re-ranked, {args.k * factor} candidates"
        rows.append({"search": name, "factor": factor, "recall": recall, "ms_per_query_first_pass": ms,
                     "ms_per_query_mapped": again})
        print(f"{name:32s} {recall:9.3f}  {ms:.3f}, {again:.3f}", flush=True)
    print(f"{'exact flat (every key in memory)':32s} {1.0:9.3f}  {flat_ms:.3f}; build {flat_build_s:.0f} s")
    print(f"peak own memory: IVF-PQ searches {searching.peak:.2f} GiB, exact search {exact.peak:.2f} GiB")
    return {"args": vars(args), "load_average": os.getloadavg(), "size": len(bank), "keys_gib": keys_gib,
            "ivfpq": {"build_s": build_s, "nlist": index.nlist, "pq_m": index.pq_m, "nprobe": index.nprobe,
                      "own_gib_before_build": before, "peak_own_gib_build": build.peak,
                      "peak_own_gib_searches": searching.peak},
            "flat": {"build_s": flat_build_s, "ms_per_query": flat_ms, "peak_own_gib": exact.peak},
            "rows": rows}


if __name__ == "__main__":
    main()
