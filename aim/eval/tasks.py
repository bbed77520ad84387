"""What kind of task a dataset is, and how each kind is scored.

| task | records | scoring | metric (first = the run's) | follows |
|---|---|---|---|---|
| ``vqa`` | a question and annotators' answers | generate | ``vqa_accuracy``, ``exact_match`` | open_flamingo's current ``vqa_metric.py`` (= lmms-eval) |
| ``caption`` | ``extra["task"] == "caption"``, reference captions as answers | generate | ``cider``, ``bleu4``, ``rouge_l`` | pycocoevalcap with its PTB tokenizer |
| ``classification`` | a class list (``extra["classes"]``, or an episode's words) | generate or likelihood | ``roc_auc`` (binary, ``extra["positive"]``), ``exact_match`` | scikit-learn's ``roc_auc_score`` |

Per-sample figures (``vqa_accuracy``, ``exact_match``) are stored with each sample; corpus figures
(CIDEr, whose document frequencies come from the whole set, and ROC-AUC) are computed per seed over
a cell's samples. With ``--scoring likelihood`` a classification record is answered by rank
classification (``Backbone.rank_classes``): the class whose name is most likely after the prompt,
and for ROC-AUC the positive class's probability among the classes (softmax of their
log-likelihoods); with ``generate``, the positive score is 1 when the generated answer is the
positive class, else 0.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from ..data.record import Record
from ..errors import AimError, MetricError
from .metrics import exact_match, vqa_accuracy

TASKS = ("auto", "vqa", "caption", "classification")
SCORING = ("generate", "likelihood")
SAMPLE_METRICS = ("vqa_accuracy", "exact_match")
CORPUS_METRICS = ("cider", "bleu4", "rouge_l", "roc_auc")
METRICS = ("auto",) + SAMPLE_METRICS + CORPUS_METRICS


def classes_of(record: Record) -> Optional[list]:
    """A record's class list: ``extra["classes"]``, or the words of its label-binding episode."""
    if record.extra.get("classes"):
        return [str(c) for c in record.extra["classes"]]
    episode = record.extra.get("episode")
    if isinstance(episode, dict) and episode.get("words"):
        return [str(w) for w in episode["words"]]
    return None


def task_of(records: Sequence[Record], task: str = "auto") -> str:
    """``auto``: the task every record names (``extra["task"]``); else classification when every
    record has a class list, a label (``extra["label"]``) or an episode; else vqa."""
    if task not in TASKS:
        raise AimError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if task != "auto":
        return task
    named = {r.extra.get("task") for r in records}
    if len(named) == 1 and next(iter(named)) in TASKS[1:]:  # other names ("binding") are the readers' own
        return named.pop()
    if records and all(classes_of(r) or "label" in r.extra or r.extra.get("episode") for r in records):
        return "classification"
    return "vqa"


def is_binary(records: Sequence[Record]) -> bool:
    return bool(records) and all(r.extra.get("positive") is not None for r in records)


def metrics_for(task: str, records: Sequence[Record]) -> list[str]:
    """The figures a cell reports for a task, the default metric first."""
    if task == "caption":
        return ["cider", "bleu4", "rouge_l"]
    if task == "classification":
        return (["roc_auc"] if is_binary(records) else []) + ["exact_match"]
    return ["vqa_accuracy", "exact_match"]


def choose_metric(records: Sequence[Record], metric: str = "auto", task: Optional[str] = None) -> str:
    """The run's metric: the task's first figure (or the one every record names in
    ``extra["metric"]``), or the one asked for when the task reports it."""
    task = task or task_of(records)
    available = metrics_for(task, records)
    if metric == "auto":
        named = {r.extra.get("metric") for r in records}
        if len(named) == 1 and None not in named:
            metric = named.pop()
        else:
            return available[0]
    if metric not in METRICS[1:]:
        raise AimError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    if metric in CORPUS_METRICS and metric not in available:
        raise AimError(f"metric {metric} does not apply to a {task} task (it reports {', '.join(available)}); "
                       + ("ROC-AUC needs binary records naming their positive class (extra['positive'])"
                          if metric == "roc_auc" else "pass --task or another --metric"))
    return metric


def check_scoring(records: Sequence[Record], scoring: str, task: str) -> None:
    """Likelihood scoring needs a class list on every record, and is not for captions (the
    scoring name itself is checked by ``IclEvalConfig``)."""
    if scoring == "likelihood":
        if task == "caption":
            raise AimError("--scoring likelihood ranks a class list; captioning is scored on generated captions "
                           "(use --scoring generate)")
        bare = next((r for r in records if not classes_of(r)), None)
        if bare is not None:
            raise AimError(f"--scoring likelihood ranks each record's class list, and record {bare.id} has none: a "
                           "classification task needs extra['classes'] on every record (a 'classes' field in "
                           "JSONL/parquet rows), or use --scoring generate")


def sample_scores(task: str, prediction: str, record: Record, logprobs: Optional[list] = None) -> dict:
    """The per-sample figures of one answer (and what the corpus figures need)."""
    out = {"exact_match": exact_match(prediction, record.answers)}
    if task == "vqa":
        out["vqa_accuracy"] = vqa_accuracy(prediction, record.answers)
    if task == "classification" and record.extra.get("positive") is not None:
        positive = str(record.extra["positive"])
        out["label"] = int(exact_match(positive, record.answers))
        if logprobs is not None:
            classes = classes_of(record)
            top = max(logprobs)
            weights = [math.exp(lp - top) for lp in logprobs]
            out["positive_score"] = weights[classes.index(positive)] / sum(weights)
        else:
            out["positive_score"] = exact_match(prediction, [positive])
    return out


def roc_auc(samples: Sequence[dict]) -> float:
    """ROC-AUC (scikit-learn) of the samples' positive scores against their labels; NaN where one
    class is missing."""
    labels = [s["label"] for s in samples]
    if len(set(labels)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, [s["positive_score"] for s in samples]))


def corpus_figures(metrics: Sequence[str], samples: Sequence[dict]) -> dict:
    """The corpus figures among ``metrics`` over one seed's samples."""
    out = {}
    if any(m in ("cider", "bleu4", "rouge_l") for m in metrics):
        from .captioning import caption_scores

        scores = caption_scores([s["prediction"] for s in samples], [s["answers"] for s in samples])
        out.update({m: scores[m] for m in metrics if m in scores})
    if "roc_auc" in metrics:
        out["roc_auc"] = roc_auc(samples)
    return out


def scorers(metrics: Sequence[str], scoring: str) -> dict:
    """Which implementation produced each figure (name and version), for results.json."""
    import aim

    out = {}
    for m in metrics:
        if m == "vqa_accuracy":
            out[m] = {"library": "aim", "version": aim.__version__,
                      "follows": "open_flamingo eval/vqa_metric.py (ground truths always normalised; = lmms-eval)"}
        elif m == "exact_match":
            out[m] = {"library": "aim", "version": aim.__version__,
                      "follows": "normalised exact match against any answer (VQA normalisation)"}
        elif m in ("cider", "bleu4", "rouge_l"):
            from .captioning import scorer_versions

            out[m] = scorer_versions()
        elif m == "roc_auc":
            try:
                import sklearn

                version = sklearn.__version__
            except ImportError:
                raise MetricError("ROC-AUC needs scikit-learn: pip install scikit-learn") from None
            out[m] = {"library": "scikit-learn", "version": version, "function": "roc_auc_score"}
    out["scoring"] = {"generate": "generated answers",
                      "likelihood": "rank classification over each record's classes (Backbone.rank_classes)"}[scoring]
    return out
