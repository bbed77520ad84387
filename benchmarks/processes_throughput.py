"""Throughput of `aim compress-demos` and `aim icl-eval` with 1 and with N processes, side by side.

    python benchmarks/processes_throughput.py --processes 2 --demos 128 --queries 64

Each configuration is the real command: one plain process, or `accelerate launch --multi_gpu
--num_processes N -m aim.cli ...` (on a machine without GPUs the processes run on the CPU, gloo;
each process gets `--threads` torch threads). compress-demos fuses `--demos` easy-VQA training
questions into a fresh bank (the shipped fuser); icl-eval answers `--queries` easy-VQA test
questions, fused and raw at 4 and 8 shots from that bank, one seed. The figure is demonstrations (or
queries) per second of wall time, the process start and model loading included, as a user waits
for them. Three configurations: 1 process with `--threads` torch threads, N processes with
`--threads` each, and 1 process with N x `--threads` (the same cores as the N processes, used by
torch's intra-op threads instead); they alternate over `--repeats`, and the load average is recorded
before and after each. Writes benchmarks/results/processes_throughput.json.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(n: int, threads: int, args: list[str]) -> tuple[list[str], dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads), PYTHONPATH=ROOT, TQDM_DISABLE="1")
    if n == 1:
        return [sys.executable, "-m", "aim.cli", *args], env
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "aim.cli", *args], env


def timed(n: int, threads: int, args: list[str]) -> dict:
    cmd, env = command(n, threads, args)
    load = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return {"seconds": seconds, "load_before": load, "load_after": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--demos", type=int, default=128)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "processes_throughput.json"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="aim-processes-")
    result = {"args": vars(args), "cpu_count": os.cpu_count(), "runs": {"compress": {}, "icl_eval": {}}}
    try:
        configs = [(1, args.threads), (args.processes, args.threads), (1, args.processes * args.threads)]
        for rep in range(args.repeats):
            for n, threads in (configs if rep % 2 == 0 else configs[::-1]):
                name = f"{n}x{threads}"
                bank = os.path.join(work, f"bank-{name}-{rep}")
                compress = ["compress-demos", "--dataset", "easy-vqa:train", "--limit", str(args.demos), "--out", bank,
                            "--batch-size", "8", "--shard-size", "16"]
                run = timed(n, threads, compress)
                run["per_second"] = args.demos / run["seconds"]
                result["runs"]["compress"].setdefault(name, []).append(run)
                evaluate = ["icl-eval", "--dataset", "easy-vqa:test", "--limit", str(args.queries), "--bank", bank,
                            "--methods", "fused,raw", "--shots", "4,8", "--seeds", "0", "--batch-size", "8",
                            "--output", os.path.join(work, f"runs-{name}-{rep}"), "--quiet"]
                run = timed(n, threads, evaluate)
                run["per_second"] = 2 * 2 * args.queries / run["seconds"]  # 2 methods x 2 shot counts
                result["runs"]["icl_eval"].setdefault(name, []).append(run)
                print(f"repeat {rep}, {n} process(es) x {threads} thread(s): compress "
                      f"{result['runs']['compress'][name][-1]['per_second']:.2f} demos/s, icl-eval "
                      f"{run['per_second']:.2f} queries/s (load {run['load_after'][0]:.2f})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    names = [f"{n}x{t}" for n, t in configs]
    print(f"\n| job (best of {args.repeats}) | " + " | ".join(f"{n} proc x {t} thr" for n, t in configs)
          + f" | {names[1]} / {names[0]} | {names[1]} / {names[2]} |")
    print("|---|" + "---:|" * (len(configs) + 2))
    for job, unit in (("compress", "demos/s"), ("icl_eval", "queries/s")):
        best = {name: max(r["per_second"] for r in result["runs"][job][name]) for name in names}
        result[f"{job}_best"] = best
        result[f"{job}_ratio"] = best[names[1]] / best[names[0]]
        result[f"{job}_ratio_same_cores"] = best[names[1]] / best[names[2]]
        print(f"| {job} ({unit}) | " + " | ".join(f"{best[n]:.2f}" for n in names)
              + f" | {result[job + '_ratio']:.2f}x | {result[job + '_ratio_same_cores']:.2f}x |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
