"""Retrieval speed: build time, query time and recall@k of FAISS flat / IVF / IVF-PQ / HNSW (aim.retrieval.KeyIndex)
against a plain torch matrix product + topk, on pools of random keys.

    python benchmarks/retrieval_speed.py --sizes 10000,100000 --dims 576 --queries 256

Keys and queries are random, L2-normalised. ``--data gaussian``: iid Gaussian vectors, the hardest case
for approximate search (no structure at all; in high dimension every key is about equally far), so its
recalls are a floor. ``--data clustered``: 1,000 random centres plus Gaussian noise (noise norm 0.6 of a
centre's), a crude stand-in for embeddings, which do cluster. Pools above --approx-max-size run only the
exact methods (torch and faiss flat): IVF training and HNSW building grow too slow on two CPU cores. Query time is the
time of one batched search of all queries divided by their number (median of --repeats runs). Prints a
markdown table (times as ratios to torch too) and writes benchmarks/results/retrieval_speed.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aim.retrieval import KeyIndex, l2_normalize, recall_at_k  # noqa: E402

logger = logging.getLogger("retrieval_speed")


def ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x]


def timed(fn, repeats: int):
    """(result of the last call, median seconds over repeats)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def random_keys(n: int, dim: int, data: str, rng: np.random.Generator) -> np.ndarray:
    """(n, dim) float32: iid Gaussian, or 1,000 Gaussian centres plus noise of norm ~0.6."""
    if data == "gaussian":
        return rng.standard_normal((n, dim), dtype=np.float32)
    centres = l2_normalize(np.random.default_rng(12345).standard_normal((1000, dim), dtype=np.float32))
    noise = rng.standard_normal((n, dim), dtype=np.float32) * np.float32(0.6 / np.sqrt(dim))
    return centres[rng.integers(0, len(centres), n)] + noise


def bench_size(n: int, dim: int, data: str, args) -> list[dict]:
    rng = np.random.default_rng(args.seed)
    keys = random_keys(n, dim, data, rng)
    queries = random_keys(args.queries, dim, data, rng)
    rows = []

    def row(method, build_s, query_s, ids, exact):
        rows.append({"size": n, "dim": dim, "data": data, "method": method, "build_s": build_s,
                     "query_ms_per_query": 1000 * query_s / args.queries, "recall": recall_at_k(ids, exact)})
        logger.info("%s n=%d %s: build %.2f s, %.3f ms/query, recall@%d %.3f", data, n, method, build_s,
                    rows[-1]["query_ms_per_query"], args.k, rows[-1]["recall"])

    # torch baseline: normalise once, then (Q, d) @ (d, N) and topk; it is also the exact answer
    start = time.perf_counter()
    pool = torch.from_numpy(l2_normalize(keys))
    build_s = time.perf_counter() - start
    q = torch.from_numpy(queries)

    def torch_search():
        qn = torch.nn.functional.normalize(q, dim=1)
        return torch.topk(qn @ pool.T, args.k, dim=1).indices.numpy()

    exact, query_s = timed(torch_search, args.repeats)
    row("torch matmul+topk", build_s, query_s, exact, exact)
    del pool

    start = time.perf_counter()
    flat = KeyIndex.build(keys, kind="flat")
    build_s = time.perf_counter() - start
    (_, ids), query_s = timed(lambda: flat.search(queries, args.k), args.repeats)
    row("faiss flat", build_s, query_s, ids, exact)
    del flat
    if n <= args.pq_max_size:  # the path to 10M+ keys: each key product-quantized to pq_m bytes
        start = time.perf_counter()
        pq = KeyIndex.build(keys, kind="ivfpq", pq_m=args.pq_m)
        build_s = time.perf_counter() - start
        bytes_per_key = pq.pq_m + 16  # the code, and the id in its list and in the id map
        for nprobe in args.nprobe:
            pq.nprobe = min(nprobe, pq.nlist)
            (_, ids), query_s = timed(lambda: pq.search(queries, args.k), args.repeats)
            row(f"faiss ivf-pq (nlist={pq.nlist}, m={pq.pq_m}, nprobe={pq.nprobe}; {bytes_per_key} B/key)", build_s,
                query_s, ids, exact)
        del pq
    if n > args.approx_max_size:
        logger.info("n=%d > --approx-max-size %d: skipping IVF and HNSW", n, args.approx_max_size)
        return rows

    start = time.perf_counter()
    ivf = KeyIndex.build(keys, kind="ivf")
    build_s = time.perf_counter() - start
    for nprobe in args.nprobe:
        ivf.nprobe = min(nprobe, ivf.nlist)
        (_, ids), query_s = timed(lambda: ivf.search(queries, args.k), args.repeats)
        row(f"faiss ivf (nlist={ivf.nlist}, nprobe={ivf.nprobe})", build_s, query_s, ids, exact)
    del ivf

    start = time.perf_counter()
    hnsw = KeyIndex.build(keys, kind="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
    build_s = time.perf_counter() - start
    for ef in args.ef_search:
        hnsw.ef_search = ef
        (_, ids), query_s = timed(lambda: hnsw.search(queries, args.k), args.repeats)
        row(f"faiss hnsw (M={args.hnsw_m}, efSearch={ef})", build_s, query_s, ids, exact)
    return rows


def table(rows: list[dict], k: int) -> str:
    lines = [f"| keys | dim | data | method | build (s) | query (ms/query) | query vs torch | recall@{k} |",
             "|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        base = next(b for b in rows if b["size"] == r["size"] and b["dim"] == r["dim"]
                    and b["data"] == r["data"] and b["method"].startswith("torch"))
        ratio = r["query_ms_per_query"] / base["query_ms_per_query"]
        lines.append(f"| {r['size']:,} | {r['dim']} | {r['data']} | {r['method']} | {r['build_s']:.2f} | "
                     f"{r['query_ms_per_query']:.3f} | {ratio:.2f}x | {r['recall']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=ints, default=[10_000, 100_000, 1_000_000], help="pool sizes, comma-separated")
    parser.add_argument("--dims", type=ints, default=[576], help="key dimensions, comma-separated "
                        "(576: the pocket backbone's hidden size)")
    parser.add_argument("--data", type=lambda t: t.split(","), default=["gaussian", "clustered"],
                        help="key distributions, comma-separated: gaussian, clustered")
    parser.add_argument("--approx-max-size", type=int, default=100_000,
                        help="pools larger than this run only the exact methods")
    parser.add_argument("--queries", type=int, default=256, help="queries per batched search")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--nprobe", type=ints, default=[64, 512], help="IVF lists visited, comma-separated")
    parser.add_argument("--ef-search", type=ints, default=[128, 1024], help="HNSW efSearch values, comma-separated")
    parser.add_argument("--pq-max-size", type=int, default=1_000_000,
                        help="pools up to this size also run IVF-PQ (trained on at most 262,144 of the keys)")
    parser.add_argument("--pq-m", type=int, default=None, help="IVF-PQ bytes per key (default: up to 64)")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and FAISS alike")
    parser.add_argument("--repeats", type=int, default=3, help="query timings are the median of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "retrieval_speed.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    rows = []
    for data in args.data:
        if data not in ("gaussian", "clustered"):
            parser.error(f"unknown --data {data!r}; choose gaussian or clustered")
        for dim in args.dims:
            for n in args.sizes:
                rows.extend(bench_size(n, dim, data, args))
    print(table(rows, args.k))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "output"}
    config["command"] = "python benchmarks/retrieval_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    versions = {"faiss": faiss.__version__, "torch": torch.__version__, "numpy": np.__version__,
                "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    out.write_text(json.dumps({"config": config, "versions": versions, "rows": rows}, indent=2, sort_keys=True) + "\n")
    logger.info("wrote %s", out)


if __name__ == "__main__":
    main()
