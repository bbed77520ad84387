"""Figures of an ``aim icl-eval`` run, aggregated from its samples: results.json, a markdown table
and a plot.

``results.json`` (close to lmms-eval's layout)::

    {"results": {DATASET: {METHOD: {SHOTS: cell}}}, "metric": ..., "configuration": {...},
     "versions": {...}, "backbone": {...}, "fuser": {...}, "memory": {...}, "bank": {...}, ...}

``task`` is vqa, caption or classification (``aim.eval.tasks``); ``metrics`` the figures every cell
reports, the run's ``metric`` first; ``scorers`` which library (name, version) produced each one and
how answers were scored (generated, or ranked by likelihood).

A cell: ``status`` ("ok" or "skipped", with ``reason``); ``accuracy`` (the run's metric, named in
its ``metric``) and each figure of ``metrics`` (VQA: ``vqa_accuracy``, ``exact_match``; captioning:
``cider``, ``bleu4``, ``rouge_l``; classification: ``roc_auc`` when binary, ``exact_match``), each
``{"mean", "std", "per_seed": {seed: value}}`` (std: sample standard deviation over seeds, 0 for one
seed); ``by_answer_type`` (the metric per answer type, yes/no, number, other, unanswerable ...,
where the records carry ``answer_type``); ``prompt_tokens`` (mean per query);
``latency_s`` (assemble + generate, per query); ``retrieval_s`` (selection + bank reads, or the
on-the-fly fusion of episode demonstrations, per query); ``peak_memory_bytes`` (the largest batch
figure, see ``memory``); ``n`` (queries per seed) and ``seeds``. Zero-shot figures appear at every
shot count of the ``zero`` row and at shots 0 of every other method, marked ``"same_as": "zero/0"``.
A vector method (``live``, ``mimic``, ``mtv``) runs once, on the zero-shot prompt with its vectors attached; its figures
appear at every shot count of its row, marked ``"same_as": "live/0"`` beyond shots 0.
"""
from __future__ import annotations

import datetime
import logging
import math
from collections import defaultdict
from typing import Sequence

from ..vectors.config import VECTOR_METHODS
from .run_folder import RunFolder

logger = logging.getLogger(__name__)

RESULTS = "results.json"
TABLE = "results.md"
PLOT = "results.png"


def _spread(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def cell_figures(samples: Sequence[dict], metric: str, metrics: Sequence[str] = ()) -> dict:
    """One (method, shots) from its samples over every seed run: each of ``metrics`` (``metric``
    first) per seed, the sample figures averaged and the corpus figures (CIDEr, ROC-AUC) computed
    over the seed's samples; with answer types, the metric per type."""
    from .tasks import SAMPLE_METRICS, corpus_figures

    metrics = list(dict.fromkeys([metric, *metrics]))
    skipped = [s for s in samples if s.get("skipped")]
    if skipped:
        worst = max(skipped, key=lambda s: s.get("prompt_tokens", 0))
        return {"status": "skipped", "reason": worst["skipped"], "prompt_tokens": worst.get("prompt_tokens")}
    by_seed: dict[int, list] = defaultdict(list)
    for s in samples:
        by_seed[int(s["seed"])].append(s)
    seeds = sorted(by_seed)
    cell = {"status": "ok", "seeds": seeds, "n": len(by_seed[seeds[0]])}
    corpus = {seed: corpus_figures([m for m in metrics if m not in SAMPLE_METRICS], by_seed[seed]) for seed in seeds}
    for name in metrics:
        if name in SAMPLE_METRICS:
            per_seed = {str(seed): sum(s[name] for s in by_seed[seed]) / len(by_seed[seed]) for seed in seeds}
        else:
            per_seed = {str(seed): corpus[seed][name] for seed in seeds}
        mean, std = _spread(list(per_seed.values()))
        cell[name] = {"mean": mean, "std": std, "per_seed": per_seed}
    cell["accuracy"] = dict(cell[metric], metric=metric)
    if metric in SAMPLE_METRICS and any("answer_type" in s for s in samples):
        types: dict[str, list] = defaultdict(list)
        for s in samples:
            types[s.get("answer_type", "other")].append(s[metric])
        cell["by_answer_type"] = {t: {"mean": sum(v) / len(v), "n": len(v) // len(seeds)} for t, v in sorted(types.items())}
    for name in ("prompt_tokens", "latency_s", "retrieval_s"):
        cell[name] = sum(s[name] for s in samples) / len(samples)
    cell["peak_memory_bytes"] = max(s["peak_memory_bytes"] for s in samples)
    return cell


def aggregate(plan, samples: Sequence[dict]) -> dict:
    """{method: {shots (str): cell}} for every method and shot count of the plan."""
    groups: dict[tuple, list] = defaultdict(list)
    for s in samples:
        groups[(s["method"], int(s["shots"]))].append(s)
    metrics = plan.metrics or [plan.metric]
    zero = cell_figures(groups[("zero", 0)], plan.metric, metrics) if groups.get(("zero", 0)) else None
    table: dict[str, dict] = {}
    for method in plan.methods:
        row = table[method] = {}
        for k in plan.shots:
            if method in plan.static_skips:
                row[str(k)] = {"status": "skipped", "reason": plan.static_skips[method]}
            elif method in VECTOR_METHODS:  # one run: the zero-shot prompt with the vectors attached
                once = groups.get((method, 0))
                row[str(k)] = (dict(cell_figures(once, plan.metric, metrics), **({"same_as": f"{method}/0"} if k else {}))
                               if once else {"status": "missing"})
            elif method == "zero" or k == 0:
                row[str(k)] = dict(zero, **({} if method == "zero" and k == 0 else {"same_as": "zero/0"}))
            elif groups.get((method, k)):
                row[str(k)] = cell_figures(groups[(method, k)], plan.metric, metrics)
            else:
                row[str(k)] = {"status": "missing"}
    return table


def results_document(plan, samples: Sequence[dict], context: dict) -> dict:
    """The whole results.json: figures plus the run's configuration, versions and fingerprints."""
    from .tasks import scorers

    metrics = plan.metrics or [plan.metric]
    scoring = context.get("configuration", {}).get("scoring", "generate")
    doc = {"results": {plan.dataset: aggregate(plan, samples)}, "metric": plan.metric,
           "task": plan.task, "metrics": list(metrics), "scorers": scorers(metrics, scoring),
           "shots": list(plan.shots), "methods": list(plan.methods), "seeds_run": list(plan.seeds),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "samples": len(samples)}
    if len(plan.seeds) < len(context["configuration"]["seeds"]):
        doc["note"] = (f"selection {context['configuration']['select']!r} is deterministic, so only seed "
                       f"{plan.seeds[0]} was run (other seeds would repeat it)")
    doc.update(context)
    return doc


def format_cell(cell: dict) -> str:
    if cell.get("status") == "skipped":
        return f"skipped: {cell['reason']}"
    if cell.get("status") != "ok":
        return cell.get("status", "?")
    acc = cell["accuracy"]
    return f"{acc['mean']:.3f} ± {acc['std']:.3f} ({cell['prompt_tokens']:.0f})"


def markdown_table(doc: dict) -> str:
    """Rows method, columns shots: "accuracy ± std (prompt tokens)", one table per dataset."""
    out = []
    for dataset, rows in doc["results"].items():
        shots = doc["shots"]
        out.append(f"{dataset}: {doc['metric']} ± std over seeds {', '.join(map(str, doc['seeds_run']))} "
                   "(prompt tokens per query)\n")
        out.append("| method | " + " | ".join(f"{k} shots" for k in shots) + " |")
        out.append("|---|" + "---|" * len(shots))
        for method, row in rows.items():
            out.append(f"| {method} | " + " | ".join(format_cell(row[str(k)]) for k in shots) + " |")
        out.append("")
    return "\n".join(out)


def plot(doc: dict, path: str) -> str:
    """Left: accuracy against shots, one line per method with std error bars; right: prompt tokens
    against shots (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for dataset, rows in doc["results"].items():
        for number, (method, row) in enumerate(rows.items()):
            ok = [(int(k), c) for k, c in row.items() if c.get("status") == "ok"]
            if not ok:
                continue
            x = [k for k, _ in ok]
            # lines may coincide (an identity fuser answers as text-only): markers and dashes tell them apart
            style = dict(marker="osD^v<>"[number % 7], linestyle="--" if method == "zero" else "-", label=method,
                         markersize=7 - number % 3)
            left.errorbar(x, [c["accuracy"]["mean"] for _, c in ok], yerr=[c["accuracy"]["std"] for _, c in ok],
                          capsize=3, **style)
            right.plot(x, [c["prompt_tokens"] for _, c in ok], **style)
        left.set_title(f"{dataset}: {doc['metric']}")
    for ax in (left, right):
        ax.set_xlabel("shots")
        ax.set_xticks(doc["shots"])
        ax.grid(alpha=0.3)
        ax.legend()
    left.set_ylabel(doc["metric"])
    right.set_ylabel("prompt tokens per query")
    right.set_yscale("log")
    right.set_title("prompt length")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_reports(folder: RunFolder, doc: dict) -> dict:
    """results.json, results.md and results.png in the run folder; returns their paths."""
    table = markdown_table(doc)
    files = {"results": folder.file(RESULTS), "table": folder.file(TABLE), "plot": folder.file(PLOT),
             "samples": folder.samples_path}
    with open(files["table"], "w") as f:
        f.write(table)
    plot(doc, files["plot"])
    folder.write_json(RESULTS, dict(doc, files=files))
    logger.info("results in %s", folder.path)
    return files
