"""What starting the toolkit costs: ``aim --help`` and ``import aim``, lazy top level against eager.

    python benchmarks/startup.py --repeats 7 [--checkout /path/to/an/older/checkout]

Side by side in one run, each command a fresh interpreter, alternated, median of the repeats:
- ``aim --help`` and ``import aim`` as the package is now (lazy: aim/lazy.py);
- the same after importing what the eager ``aim/__init__.py`` imported before the lazy top level
  (api, bank, compress, fusion, backbones, data readers: torch, transformers and FAISS with them),
  which is what ``aim --help`` cost then;
- with ``--checkout``, ``aim --help`` of that checkout's own code (PYTHONPATH), for the real before.
Also the ten slowest entries of ``python -X importtime -c "import aim"``. Writes
benchmarks/results/startup.json.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EAGER = "import aim.api, aim.bank, aim.compress, aim.fusion.model, aim.backbones.registry, aim.data.spec\n"
HELP = "import sys\nfrom aim.cli import main\nsys.argv = ['aim', '--help']\nmain()\n"
COMMANDS = {
    "aim --help (lazy)": HELP,
    "aim --help (eager imports first)": EAGER + HELP,
    "import aim (lazy)": "import aim\n",
    "import aim (eager imports)": EAGER,
}


def wall(code: str, pythonpath: str) -> float:
    env = dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, env=env, cwd="/")
    return time.perf_counter() - start


def import_time_top(pythonpath: str, n: int = 10) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import aim"], capture_output=True, text=True,
                         env=env, cwd="/", check=True).stderr
    rows = []
    for line in out.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():  # the header line, or another line
            continue
        self_us, cumulative_us, name = parts
        rows.append({"module": name.strip(), "self_ms": int(self_us) / 1000,
                     "cumulative_ms": int(cumulative_us) / 1000})
    rows.sort(key=lambda r: -r["cumulative_ms"])
    return rows[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--checkout", default=None, help="an older checkout whose `aim --help` to time beside")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "startup.json"))
    args = ap.parse_args()
    commands = {name: (code, ROOT) for name, code in COMMANDS.items()}
    if args.checkout:
        commands["aim --help (--checkout)"] = (HELP, os.path.abspath(args.checkout))
    for code, path in commands.values():  # warm the file cache once
        wall(code, path)
    times = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, (code, path) in commands.items():
            times[name].append(wall(code, path))
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {"args": vars(args), "python": platform.python_version(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "seconds": times, "median_s": median,
              "ratio_help_lazy_over_eager": median["aim --help (lazy)"] / median["aim --help (eager imports first)"],
              "import_aim_slowest": import_time_top(ROOT)}
    if args.checkout:
        result["ratio_help_lazy_over_checkout"] = median["aim --help (lazy)"] / median["aim --help (--checkout)"]
        result["import_aim_slowest_checkout"] = import_time_top(os.path.abspath(args.checkout))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"| command | median of {args.repeats} (s) |")
    print("|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.3f} |")
    print(f"\naim --help lazy / eager: {result['ratio_help_lazy_over_eager']:.2f}x")
    if args.checkout:
        print(f"aim --help lazy / {args.checkout}: {result['ratio_help_lazy_over_checkout']:.2f}x")
    print("\nslowest imports of `import aim` (cumulative ms):")
    for row in result["import_aim_slowest"]:
        print(f"  {row['cumulative_ms']:8.1f}  {row['module']}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
