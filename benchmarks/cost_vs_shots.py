"""Per-query cost against shots on the pocket backbone (CPU): zero-shot, raw multimodal ICL, text-only
and fused demonstrations (one fused token per text token, the shipped fuser's shape, and pooled to 4
and to 1 per demonstration).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cost_vs_shots.py            # default, ~10-15 min on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cost_vs_shots.py --quick    # smoke version, ~1-2 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cost_vs_shots.py --shots 0,8,32 \
        --backbone pocket:aim/backbones/pocket/checkpoints/next --fuser aim/backbones/pocket/checkpoints/next-fuser

What a query costs here is what it costs a user of ``aim.FewShot`` with a bank already built: the
banks (``aim.compress_demos`` over easy-VQA train records, identity-kind fusers, with and without
``pool_tokens``) are built once, before anything is timed. Cost does not depend on the fuser's weights,
only on how many tokens it makes, so an identity fuser stands for a trained per-token fuser.

Per query (batch 1, one easy-VQA test question), timed phase by phase:

- retrieval: the query's image key (a vision-tower forward) + FAISS search over the bank's image keys
  (``FewShot.select``, most similar last); none for zero-shot;
- read: the fused tokens of the k demonstrations from the bank (memory-mapped safetensors), or, for
  raw and text, their metadata (and for raw their image files);
- assembly: ``aim.prompting.assemble`` (chat template, tokenization, the query's image through the
  vision tower, and for raw every demonstration's image too);
- prefill: one forward of the LLM over the prompt with the KV cache, and the first token's argmax;
- decode: the remaining answer tokens, greedy with the cache.

The answer is forced to ``--new-tokens`` tokens (no stop string, no EOS), so every method decodes the
same number of tokens; the greedy loop mirrors ``Backbone.generate`` and is checked against it once per
method. Time to the first answer token = retrieval + read + assembly + prefill; whole-answer latency =
that + decode. Timings interleave all configurations round-robin (order reversed on every repeat) in one
process, so background load falls on all of them alike; each figure is the median over ``--repeats``
per query, then the mean over queries, and they are reported as ratios to zero-shot (the floor).

Peak memory, per configuration in a process of its own (so that no earlier, larger configuration has
grown the heap): a fresh subprocess loads the backbone and banks and runs one zero-shot query, then
forks one child per configuration; the child warms up with a 1-shot query of its method (zero-shot:
a zero-shot query), resets the kernel's peak-RSS mark (``/proc/self/clear_refs``) and runs one query.
``rss_delta`` is the peak resident set during that query minus the resident set just before it (what
the query adds to the process, as the OS sees it; coarse: the C allocator reuses memory it already
holds). The same query then runs under the torch profiler with memory profiling; ``tensor_peak`` is
the highest total of torch CPU tensor bytes allocated during it (the CPU analogue of
``torch.cuda.max_memory_allocated`` above the model's weights).

Checks printed and saved: (a) a fused k-shot prompt has exactly the zero-shot prompt's tokens plus the
fused tokens of its k demonstrations; (b) retrieval + bank read + assembly add at most 5% to the LLM's
forward passes (prefill + decode) for every fused configuration; (c) fused 32-shot whole-answer latency
(the shipped fuser's shape) is at most 0.35x raw 32-shot, and its peak memory (both measures) below raw's.
Writes benchmarks/results/cost_vs_shots.json (``--quick``: cost_vs_shots_quick.json) and a PNG plot.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import aim  # noqa: E402
from aim.backbones.base import Demo, PromptBatch, output_cache  # noqa: E402
from aim.images import load_image  # noqa: E402
from aim.prompting import assemble  # noqa: E402

logger = logging.getLogger("cost_vs_shots")

#: method name -> (prompt method, bank pooling, or "shipped": the backbone's shipped fuser, whose shape
#: (per-token, prepended tokens) is what users run); "zero" is the floor every ratio is taken against
METHODS = {"zero": ("zero", None), "raw": ("raw", None), "text": ("text", None), "fused": ("fused", None),
           "fused-shipped": ("fused", "shipped"), "fused-pool4": ("fused", 4), "fused-pool1": ("fused", 1)}
COLORS = {"zero": "gray", "raw": "C0", "text": "C1", "fused": "C2", "fused-shipped": "C5", "fused-pool4": "C3",
          "fused-pool1": "C4"}
FUSED = [m for m in METHODS if m.startswith("fused")]
LATENCY_TARGET = 0.35  # fused 32-shot whole-answer latency against raw 32-shot, at most (check c)


def bank_fuser(backbone, name: str, shipped: str = None):
    """The fuser of a bank: the shipped one (or the folder ``shipped``, for a backbone that ships none
    yet), or an identity fuser (cost depends on the token count only)."""
    pooling = METHODS[name][1]
    if pooling == "shipped":
        from aim.fusion import load_fuser

        return load_fuser(shipped, backbone)
    return aim.Fuser.for_backbone(backbone, kind="identity", pool_tokens=pooling)
PHASES = ("retrieval", "read", "assembly", "prefill", "decode", "first_token", "total")
MB = 1024 * 1024


# ------------------------------------------------------------------ measuring (shared with true_scale.py)
@torch.no_grad()
def greedy_forced(backbone, batch: PromptBatch, new_tokens: int, sync=lambda: None) -> tuple[list, float, float]:
    """Greedy decoding of exactly ``new_tokens`` tokens per row (no stop, no EOS), with the KV cache, as
    ``Backbone.generate`` decodes. Returns (token ids per row, prefill seconds, decode seconds); prefill
    includes the first token's logits and argmax."""
    start = time.perf_counter()
    out = backbone.run(batch, use_cache=True)
    nxt = backbone.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
    sync()
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    tokens = [nxt]
    cache, mask, pos = output_cache(out), batch.attention_mask, batch.position_ids[..., -1:]
    n = batch.inputs_embeds.shape[0]
    for _ in range(new_tokens - 1):
        mask = torch.cat([mask, mask.new_ones(n, 1)], dim=1)
        pos = pos + 1
        step = PromptBatch(backbone.embed_tokens(nxt[:, None]).to(batch.inputs_embeds.dtype), mask, pos, nxt[:, None])
        out = backbone.run(step, cache=cache, use_cache=True)
        cache = output_cache(out)
        nxt = backbone.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
        tokens.append(nxt)
    sync()
    decode = time.perf_counter() - start
    ids = torch.stack(tokens, 1).tolist()
    return ids, prefill, decode


def matches_generate(backbone, batch: PromptBatch, new_tokens: int) -> bool:
    """Whether the forced loop's tokens, cut at the first EOS, decode to ``Backbone.generate``'s answer."""
    ids, _, _ = greedy_forced(backbone, batch, new_tokens)
    eos = {backbone.tokenizer.eos_token_id, *getattr(backbone, "extra_eos_ids", [])}
    ours = []
    for row in ids:
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        ours.append(backbone.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    theirs = [g.text for g in backbone.generate(batch, max_new_tokens=new_tokens, stop=())]
    return ours == theirs


def tensor_peak_bytes(fn) -> int:
    """Highest total of CPU tensor bytes allocated while ``fn()`` runs (torch profiler memory events,
    in time order; tensors alive before the call are not counted)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type().name == "CPU"]
    total = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        total += e.nbytes()
        peak = max(peak, total)
    return peak


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_delta_bytes(fn) -> tuple[int, bool]:
    """(peak resident set while ``fn()`` runs minus the resident set before it, whether the kernel's peak
    mark could be reset). Without the reset the figure is only an upper bound of zero growth."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        reset = True
    except OSError:
        reset = False
    before = _status_kb("VmRSS")
    fn()
    return max(0, _status_kb("VmHWM") - before) * 1024, reset


def environment(threads: int) -> dict:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": threads,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "note": "shared 2-core machine with background load (a training run and other jobs): absolute times "
                    "are noisy, ratios measured side by side in one run are the figures to read"}


def median(values):
    return statistics.median(values) if values else None


# ------------------------------------------------------------------ the pipeline
class Setup:
    """The backbone and one FewShot per bank (per-token fused, pooled to 4, pooled to 1)."""

    def __init__(self, backbone, folders: dict, new_tokens: int, shipped: str = None):
        self.backbone, self.new_tokens = backbone, new_tokens
        self.fewshot = {}
        for name, folder in folders.items():
            fs = aim.FewShot(backbone, bank_fuser(backbone, name, shipped))
            fs.open_bank(folder)
            self.fewshot[name] = fs

    def query(self, method: str, k: int, image, question: str) -> dict:
        """One query, phase by phase; returns seconds per phase and prompt/demo facts."""
        kind, _ = METHODS[method]
        fs = self.fewshot[method if method.startswith("fused") else "fused"]
        t0 = time.perf_counter()
        ids = fs.demo_ids([image], [question], k, "image")[0] if k and kind != "zero" else []
        t1 = time.perf_counter()
        fused, demos = [], []
        if kind == "fused":
            fused = [fs.bank.fused(i) for i in ids]
        elif kind in ("raw", "text"):
            for i in ids:
                meta = fs.bank.meta(i)
                demos.append(Demo(load_image(meta["image"]) if kind == "raw" else None, meta["question"],
                                  meta["answers"][0]))
        t2 = time.perf_counter()
        batch = assemble(self.backbone, kind, [image], [question], demos=[demos], fused=[fused])
        t3 = time.perf_counter()
        _, prefill, decode = greedy_forced(self.backbone, batch, self.new_tokens)
        times = {"retrieval": t1 - t0, "read": t2 - t1, "assembly": t3 - t2, "prefill": prefill, "decode": decode}
        times["first_token"] = times["retrieval"] + times["read"] + times["assembly"] + prefill
        times["total"] = times["first_token"] + decode
        return {"times": times, "prompt_tokens": batch.lengths[0], "fused_tokens": [int(f.shape[0]) for f in fused],
                "demo_ids": ids, "batch": batch}


def build_banks(backbone, records, folder: str, shipped: str = None) -> dict:
    """compress_demos once per pooling (resumed when the folder holds them already); not timed as a query."""
    out = {}
    for name in FUSED:
        fuser = bank_fuser(backbone, name, shipped)
        summary = aim.compress_demos(backbone, fuser, records, os.path.join(folder, name), batch_size=8,
                                     keys=("image",), progress=False)
        out[name] = {"folder": os.path.join(folder, name), "demos": summary["demos"],
                     "fused_tokens_per_demo": summary["fused_tokens_per_demo"], "seconds": summary["seconds"]}
        logger.info("bank %s: %d demos, %.1f fused tokens per demo, %.1f s", name, summary["demos"],
                    summary["fused_tokens_per_demo"], summary["seconds"])
    return out


def configurations(shots) -> list[tuple[str, int]]:
    return [("zero", 0)] + [(m, k) for m in METHODS if m != "zero" for k in shots if k > 0]


# ------------------------------------------------------------------ memory (a fresh process per configuration)
def _measure_memory(setup, method, k, image, question) -> dict:
    # warm-up in this process (a forked child faults the parent's file-backed weight pages in on first touch):
    # bank handles, FAISS index, kernels
    setup.query(method, min(k, 1), image, question)
    rss, reset = rss_delta_bytes(lambda: setup.query(method, k, image, question))
    tensor = tensor_peak_bytes(lambda: setup.query(method, k, image, question))
    return {"rss_delta_mb": rss / MB, "rss_reset": reset, "tensor_peak_mb": tensor / MB,
            "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def memory_worker(spec: dict) -> list:
    """Load the backbone and banks once, warm up with one zero-shot query, then fork one child per
    configuration: every configuration starts from the same freshly loaded process, and no earlier
    configuration has grown its heap."""
    torch.set_num_threads(spec["threads"])
    backbone = aim.load_backbone(spec["backbone"])
    setup = Setup(backbone, spec["folders"], spec["new_tokens"], spec["fuser"])
    image, question = load_image(spec["image"]), spec["question"]
    setup.query("zero", 0, image, question)
    results = []
    for method, k in spec["configs"]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child measures one configuration and leaves
            os.close(read)
            try:
                payload = json.dumps(_measure_memory(setup, method, k, image, question))
            except BaseException as err:  # report, never fall back into the parent's loop
                payload = json.dumps({"error": repr(err)})
            with os.fdopen(write, "w") as f:
                f.write(payload)
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            payload = f.read()
        os.waitpid(pid, 0)
        results.append(json.loads(payload))
    return results


def run_memory(configs, query, folders, args) -> list:
    spec = {"configs": configs, "image": query.image, "question": query.question, "folders": folders,
            "new_tokens": args.new_tokens, "threads": args.threads, "backbone": args.backbone, "fuser": args.fuser}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{proc.stderr[-3000:]}")
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (method, k), res in zip(configs, results):
        if "error" in res:
            raise RuntimeError(f"memory of {method} k={k}: {res['error']}")
    return results


# ------------------------------------------------------------------ the run
def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    load = {"start": os.getloadavg()}
    backbone = aim.load_backbone(args.backbone)
    records = aim.load_records("easy-vqa:train", args.bank_size)
    tests = aim.load_records("easy-vqa:test")
    queries = [tests[i * args.query_stride] for i in range(args.queries)]
    bank_dir = args.bank_dir or tempfile.mkdtemp(prefix="aim-cost-banks-")
    banks = build_banks(backbone, records, bank_dir, args.fuser)
    folders = {name: b["folder"] for name, b in banks.items()}
    setup = Setup(backbone, folders, args.new_tokens, args.fuser)
    images = [load_image(q.image) for q in queries]
    configs = configurations(args.shots)

    # warm-up, and the forced greedy loop checked against Backbone.generate once per method
    decode_check = {}
    for method in METHODS:
        k = 0 if method == "zero" else 1
        res = setup.query(method, k, images[0], queries[0].question)
        decode_check[method] = matches_generate(backbone, res["batch"], args.new_tokens)
    logger.info("forced greedy loop equals Backbone.generate (cut at EOS): %s", decode_check)

    samples = {c: [[] for _ in queries] for c in configs}
    facts = {}
    for rep in range(args.repeats):
        order = configs if rep % 2 == 0 else configs[::-1]
        for qi, (query, image) in enumerate(zip(queries, images)):
            for method, k in order:
                res = setup.query(method, k, image, query.question)
                samples[(method, k)][qi].append(res["times"])
                facts[(method, k, qi)] = res
        load[f"after_repeat_{rep + 1}"] = os.getloadavg()
        logger.info("repeat %d/%d done (load average %s)", rep + 1, args.repeats, load[f"after_repeat_{rep + 1}"])

    rows = []
    for method, k in configs:
        per_query = {p: [median([t[p] for t in samples[(method, k)][qi]]) for qi in range(len(queries))]
                     for p in PHASES}
        row = {"method": method, "shots": k,
               "prompt_tokens": statistics.mean(facts[(method, k, qi)]["prompt_tokens"] for qi in range(len(queries))),
               "prompt_tokens_per_query": [facts[(method, k, qi)]["prompt_tokens"] for qi in range(len(queries))],
               "seconds": {p: statistics.mean(v) for p, v in per_query.items()},
               "seconds_per_query": per_query}
        rows.append(row)

    # memory, one fresh process per configuration (first query)
    if not args.skip_memory:
        for row, mem in zip(rows, run_memory(configs, queries[0], folders, args)):
            row["memory"] = mem
            logger.info("memory %s k=%d: %s", row["method"], row["shots"], mem)
    load["end"] = os.getloadavg()
    if not args.bank_dir:
        shutil.rmtree(bank_dir, ignore_errors=True)  # a temporary folder of this run

    zero = rows[0]
    raw = {r["shots"]: r for r in rows if r["method"] == "raw"}
    for r in rows:
        r["vs_zero"] = {"prompt_tokens": r["prompt_tokens"] / zero["prompt_tokens"],
                        **{p: r["seconds"][p] / zero["seconds"][p] for p in ("prefill", "first_token", "total")}}
        if "memory" in r and zero["memory"]["tensor_peak_mb"] > 0:
            r["vs_zero"]["tensor_peak"] = r["memory"]["tensor_peak_mb"] / zero["memory"]["tensor_peak_mb"]
        if r["shots"] in raw and r["method"] != "raw":
            base = raw[r["shots"]]
            r["vs_raw"] = {"prompt_tokens": r["prompt_tokens"] / base["prompt_tokens"],
                           "total": r["seconds"]["total"] / base["seconds"]["total"]}
    checks = run_checks(rows, facts, queries, configs)
    return {"config": {k: v for k, v in vars(args).items() if k not in ("memory_worker", "out", "plot")},
            "command": "OMP_NUM_THREADS=%s .venv/bin/python benchmarks/cost_vs_shots.py %s"
                       % (os.environ.get("OMP_NUM_THREADS", "?"), " ".join(sys.argv[1:])),
            "environment": environment(args.threads), "load_average": load, "banks": banks,
            "queries": [{"id": q.id, "question": q.question} for q in queries],
            "decode_loop_matches_generate": decode_check, "rows": rows, "checks": checks,
            "memory_method": "rss_delta: peak RSS during one query minus RSS before it, in a process of its own per "
                             "configuration (forked from a fresh, loaded process; VmHWM reset through "
                             "/proc/self/clear_refs after warm-up); tensor_peak: "
                             "highest total of torch CPU tensor bytes allocated during the query (torch profiler)"}


def run_checks(rows, facts, queries, configs) -> dict:
    by = {(r["method"], r["shots"]): r for r in rows}
    # (a) fused prompt tokens = zero-shot tokens + the fused tokens of the k demonstrations, exactly
    failures, compared = [], 0
    for method, k in configs:
        if not method.startswith("fused"):
            continue
        for qi in range(len(queries)):
            res, zero = facts[(method, k, qi)], facts[("zero", 0, qi)]
            compared += 1
            if res["prompt_tokens"] != zero["prompt_tokens"] + sum(res["fused_tokens"]):
                failures.append({"method": method, "shots": k, "query": qi, "prompt": res["prompt_tokens"],
                                 "zero": zero["prompt_tokens"], "fused": sum(res["fused_tokens"])})
    a = {"passed": not failures, "prompts_compared": compared, "failures": failures}
    # (b) retrieval + bank read + assembly against the LLM's forward passes, every fused configuration
    worst, fractions = None, {}
    for r in rows:
        if r["method"].startswith("fused"):
            s = r["seconds"]
            frac = (s["retrieval"] + s["read"] + s["assembly"]) / (s["prefill"] + s["decode"])
            fractions[f"{r['method']}@{r['shots']}"] = frac
            worst = frac if worst is None else max(worst, frac)
    b = {"passed": worst is not None and worst <= 0.05, "max_fraction": worst, "fractions": fractions,
         "note": "retrieval includes the query-key vision forward, assembly the query image's vision forward"}
    # (c) fused 32-shot (the shipped fuser's shape) against raw 32-shot
    c = {"passed": None}
    if ("fused-shipped", 32) in by and ("raw", 32) in by:
        f, r = by[("fused-shipped", 32)], by[("raw", 32)]
        c = {"latency_ratio": f["seconds"]["total"] / r["seconds"]["total"], "target": LATENCY_TARGET,
             "first_token_ratio": f["seconds"]["first_token"] / r["seconds"]["first_token"],
             "prompt_tokens": {"fused": f["prompt_tokens"], "raw": r["prompt_tokens"]}}
        ok = c["latency_ratio"] <= LATENCY_TARGET
        if "memory" in f and "memory" in r:
            c["rss_delta_mb"] = {"fused": f["memory"]["rss_delta_mb"], "raw": r["memory"]["rss_delta_mb"]}
            c["tensor_peak_mb"] = {"fused": f["memory"]["tensor_peak_mb"], "raw": r["memory"]["tensor_peak_mb"]}
            ok = ok and f["memory"]["rss_delta_mb"] < r["memory"]["rss_delta_mb"] \
                and f["memory"]["tensor_peak_mb"] < r["memory"]["tensor_peak_mb"]
        c["passed"] = ok
    return {"a_fused_tokens_add_up": a, "b_overhead_at_most_5pct": b, "c_fused32_vs_raw32": c}


# ------------------------------------------------------------------ output
def table(result: dict) -> str:
    lines = ["| method | shots | prompt tokens | x zero | prefill s | first token s | answer s | answer x zero "
             "| answer x raw | RSS delta MB | tensor peak MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        s, m = r["seconds"], r.get("memory", {})
        vs_raw = f"{r['vs_raw']['total']:.2f}" if "vs_raw" in r else ""
        mem = (f"{m['rss_delta_mb']:.1f} | {m['tensor_peak_mb']:.1f}") if m else " | "
        lines.append(f"| {r['method']} | {r['shots']} | {r['prompt_tokens']:.0f} | {r['vs_zero']['prompt_tokens']:.1f} "
                     f"| {s['prefill']:.3f} | {s['first_token']:.3f} | {s['total']:.3f} | {r['vs_zero']['total']:.2f} "
                     f"| {vs_raw} | {mem} |")
    return "\n".join(lines)


def print_checks(checks: dict) -> None:
    a, b, c = checks["a_fused_tokens_add_up"], checks["b_overhead_at_most_5pct"], checks["c_fused32_vs_raw32"]
    print(f"(a) fused prompt tokens = zero-shot + sum of fused tokens, exactly: {'PASS' if a['passed'] else 'FAIL'} "
          f"({a['prompts_compared']} prompts)")
    if b["max_fraction"] is not None:
        print(f"(b) retrieval + read + assembly <= 5% of the LLM forward passes: {'PASS' if b['passed'] else 'FAIL'} "
              f"(worst {100 * b['max_fraction']:.1f}%)")
    if c["passed"] is None:
        print("(c) not measured (needs 32 shots)")
    else:
        mem = ""
        if "rss_delta_mb" in c:
            mem = (f", RSS delta {c['rss_delta_mb']['fused']:.1f} vs {c['rss_delta_mb']['raw']:.1f} MB, tensor peak "
                   f"{c['tensor_peak_mb']['fused']:.1f} vs {c['tensor_peak_mb']['raw']:.1f} MB")
        print(f"(c) fused 32-shot (shipped fuser's shape) vs raw 32-shot, latency at most "
              f"{c.get('target', 0.5):.2f}x: {'PASS' if c['passed'] else 'FAIL'} (latency {c['latency_ratio']:.2f}x{mem})")


def shots_axis(ax, shots) -> None:
    """x axis of shot counts 0, 1, 2, 4, ...: log-like beyond 1, with 0 on it."""
    ax.set_xscale("symlog", base=2, linthresh=1, linscale=0.5)
    ax.set_xlim(-0.15, max(shots) * 1.15)
    ax.set_xticks(sorted(shots))
    ax.set_xticklabels([str(k) for k in sorted(shots)], fontsize=7)
    ax.set_xlabel("shots k")
    ax.grid(alpha=0.3)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    zero = rows[0]
    shots = sorted({r["shots"] for r in rows})
    panels = [("prompt tokens", lambda r: r["prompt_tokens"]),
              ("whole-answer latency (x zero-shot)", lambda r: r["vs_zero"]["total"]),
              ("time to first answer token (x zero-shot)", lambda r: r["vs_zero"]["first_token"])]
    if "memory" in zero:
        panels.append(("peak tensor memory of the query (MB)", lambda r: r["memory"]["tensor_peak_mb"]))
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    axes = axes.flatten()
    for ax, (title, value) in zip(axes, panels):
        for method in METHODS:
            if method == "zero":
                continue
            pts = [zero] + [r for r in rows if r["method"] == method]
            ax.plot([r["shots"] for r in pts], [value(r) for r in pts], marker="o", ms=3, label=method,
                    ls=":" if method == "text" else "-", color=COLORS[method])
        ax.axhline(value(zero), color="gray", ls="--", lw=0.8, label="zero-shot")
        shots_axis(ax, shots)
        ax.set_title(title, fontsize=9)
    for ax in axes[len(panels):]:
        ax.axis("off")
    axes[0].legend(fontsize=7)
    backbone = result["config"].get("backbone", "pocket")  # results saved before --backbone: the pocket
    fig.suptitle(f"{backbone}, CPU, {result['environment']['torch_threads']} thread(s), batch 1, "
                 f"{result['config']['new_tokens']} answer tokens; background load present", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_png(json_path: str) -> str:
    """A default run's figure goes to docs/ (docs/cost.md shows it); a smoke run's stays beside its JSON."""
    stem = os.path.basename(json_path)[:-len(".json")]
    return json_path[:-len(".json")] + ".png" if stem.endswith("_quick") else os.path.join(ROOT, "docs", stem + ".png")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="pocket", help="backbone spec, e.g. pocket:FOLDER for another checkpoint")
    ap.add_argument("--fuser", default=None,
                    help="fuser folder of the fused-shipped bank (default: the one that ships for the backbone)")
    ap.add_argument("--shots", default="0,1,2,4,8,16,32,64", help="comma-separated shot counts")
    ap.add_argument("--queries", type=int, default=2, help="easy-VQA test questions (batch 1 each)")
    ap.add_argument("--query-stride", type=int, default=97, help="take every n-th test question")
    ap.add_argument("--repeats", type=int, default=3, help="timings are medians over this many repeats")
    ap.add_argument("--new-tokens", type=int, default=10, help="answer tokens decoded per query (forced)")
    ap.add_argument("--bank-size", type=int, default=None, help="demonstrations in each bank (default: max shots)")
    ap.add_argument("--bank-dir", default=None, help="keep the banks here (reused when present); default: a temp dir")
    ap.add_argument("--threads", type=int, default=1, help="torch and FAISS threads")
    ap.add_argument("--skip-memory", action="store_true", help="no memory subprocesses")
    ap.add_argument("--quick", action="store_true", help="smoke version: shots 0,2,8, one query, one repeat")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/cost_vs_shots[_quick].json)")
    ap.add_argument("--plot", default=None,
                    help="PNG path (default docs/cost_vs_shots.png; --quick: beside the JSON)")
    ap.add_argument("--replot", default=None, metavar="JSON",
                    help="no measuring: print the table and checks of a saved result and redraw its plot")
    ap.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            result = json.load(f)
        print(table(result))
        print_checks(result["checks"])
        png = args.plot or default_png(args.replot)
        plot(result, png)
        print(f"wrote {png}")
        return
    if args.memory_worker:
        logging.disable(logging.WARNING)
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.quick:
        args.shots, args.queries, args.repeats = "0,2,8", 1, 1
    args.shots = sorted({int(s) for s in str(args.shots).split(",")} | {0})
    args.bank_size = args.bank_size or max(max(args.shots), 1)
    suffix = "_quick" if args.quick else ""
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"cost_vs_shots{suffix}.json")
    png = args.plot or default_png(out)
    start = time.perf_counter()
    result = measure(args)
    result["elapsed_seconds"] = time.perf_counter() - start
    print(table(result))
    print_checks(result["checks"])
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2, default=str)
    plot(result, png)
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    main()
