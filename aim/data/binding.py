"""Label binding with made-up words: image classes renamed, per episode, to words that mean
nothing, so a model can only answer from the demonstrations it is shown.

An episode draws ``ways`` classes of a labelled image set (``aim.data.image_sets``: Fashion-MNIST by
default; emoji, digits and silhouettes are held out from all training) and as many words of a
vocabulary (``aim.data.vocab``: consonant-vowel words by default; ordinary-looking made-up words,
real words, numbers, two-word labels). The query is an image of one of those classes and its answer
is that class's word. The episode's demonstrations (other images of the same classes, labelled with
the episode's words, asked the record's own question) come with the record:
``record.extra["episode"]`` holds everything needed, and :func:`episode_demos` returns k of them in
prompt order, drawn ``balanced`` over the classes (as evenly as k allows), ``random`` (each
demonstration's class drawn alone, as random selection from a pool does: the query's class may be
rare or absent) or ``rare`` (the query's class shown exactly once).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

from ..errors import AimError
from .image_sets import SETS, load_image_set
from .record import Record
from .vocab import TEST_WORDS, TRAIN_WORDS, made_up_words  # noqa: F401 (re-exported)

QUESTION = "What is this?"
#: question wordings of the training episodes (the pocket's stage 2 and fuser)
TRAIN_QUESTIONS = (
    "What is this?", "What is shown?", "What do you see?", "Name the object.", "What kind of thing is this?",
    "Which label fits this image?", "What is in the picture?", "Identify this.", "What would you call this?",
    "Label this image.", "What category is this?", "What is depicted here?", "Give the name of this.",
    "Which one is it?", "What type is it?", "Classify the image.",
)
#: wordings no training episode uses, for evaluation
HELD_OUT_QUESTIONS = (
    "What is the name of the thing in this image?", "Tell me what this is.", "Which word goes with this picture?",
    "How would you label this one?", "What's this called?", "Say what the picture shows.",
)
DRAWS = ("balanced", "random", "rare")
SOURCES = SETS
WAYS = (2, 5)


def _images(split: str, source: str = "fashion-mnist"):
    data = load_image_set(source, split)
    return data.images, data.labels


def _per_class(ways: int, max_shots: int, draw: str) -> int:
    return 2 * -(-max_shots // ways) if draw == "balanced" else max_shots


def _eligible(labels: np.ndarray, need: int) -> list[int]:
    """The classes with ``need`` images besides any one query."""
    counts = np.bincount(labels)
    return [c for c in range(len(counts)) if counts[c] > need]


def episode(images: np.ndarray, labels: np.ndarray, words: list[str], ways: int, max_shots: int,
            rng: np.random.Generator, query: int, draw: str = "balanced") -> dict:
    """One episode as plain data: classes, their words, the query index and, per class, candidate
    demonstration indices (never the query). Balanced draws keep twice what ``max_shots`` needs per
    class (so seeds draw different demonstrations); random and rare draws keep ``max_shots``, as one
    class may fill a whole prompt. Only classes with enough images besides the query take part."""
    need = _per_class(ways, max_shots, draw)
    eligible = _eligible(labels, need)
    if int(labels[query]) not in eligible or len(eligible) < ways:
        raise AimError(f"{ways}-way episodes with {draw} draws of up to {max_shots} shots need {need} images per "
                       f"class besides the query; this image set has {len(eligible)} such classes: use fewer ways "
                       "or shots")
    others = [c for c in eligible if c != int(labels[query])]
    classes = [int(labels[query])] + [int(c) for c in rng.choice(others, size=ways - 1, replace=False)]
    classes = [classes[i] for i in rng.permutation(ways)]
    names = [str(w) for w in rng.choice(words, size=ways, replace=False)]
    candidates = []
    for c in classes:
        pool = np.flatnonzero(labels == c)
        pool = pool[pool != query]
        candidates.append([int(i) for i in rng.choice(pool, size=need, replace=False)])
    return {"classes": classes, "words": names, "query": int(query), "candidates": candidates,
            "seed": int(rng.integers(2**31)), "draw": draw}


def _question(question: str, rng: np.random.Generator) -> str:
    if question == "held-out":
        return HELD_OUT_QUESTIONS[int(rng.integers(len(HELD_OUT_QUESTIONS)))]
    if question == "train":
        return TRAIN_QUESTIONS[int(rng.integers(len(TRAIN_QUESTIONS)))]
    if not question.strip():
        raise AimError("label binding: the question is empty; give a wording, or held-out / train")
    return question


def binding_records(split: str = "test", ways: int = 2, n: int = 200, seed: int = 0, max_shots: int = 16,
                    words: str = "test", source: str = "fashion-mnist", vocab: str = "cv",
                    question: str = QUESTION, draw: str = "balanced") -> list[Record]:
    """``n`` label-binding queries on ``split`` images of the image set ``source``, labelled with words
    of the ``words`` pool (train or test) of vocabulary ``vocab``. ``question``: the wording every
    demonstration and the query are asked (default "What is this?"), or ``held-out`` / ``train`` for one
    of those lists drawn per record. ``draw``: how ``episode_demos`` picks demonstrations. Queries are
    the first ``n`` of a seeded permutation of the split; the seed also draws the classes, words,
    wording and demonstrations of each episode."""
    from .vocab import label_words

    if not 2 <= ways <= 10:
        raise AimError(f"label binding needs 2 to 10 ways, got {ways}")
    if draw not in DRAWS:
        raise AimError(f"label-binding draw {draw!r}: use one of {', '.join(DRAWS)}")
    images, labels = _images(split, source)
    pool = label_words(vocab, words)
    rng = np.random.default_rng([seed, ways])
    eligible = _eligible(labels, _per_class(ways, max_shots, draw))
    if len(eligible) < ways:
        raise AimError(f"{source}:{split} has {len(eligible)} classes with enough images for {ways}-way episodes of "
                       f"up to {max_shots} {draw} shots: use fewer ways or shots (+shots=N)")
    rows = np.flatnonzero(np.isin(labels, eligible))
    queries = rows[rng.permutation(len(rows))[:n]]
    prefix = "" if source == "fashion-mnist" else f"{source}-"
    suffix = "".join(f"-{v}" for v, default in ((vocab, "cv"), (draw, "balanced")) if v != default)
    if question != QUESTION:
        suffix += "-q" + ("held-out" if question == "held-out" else "train" if question == "train"
                          else str(abs(hash(question)) % 10**6))
    records = []
    for q in queries:
        ep = episode(images, labels, pool, ways, max_shots, rng, query=int(q), draw=draw)
        word = ep["words"][ep["classes"].index(int(labels[q]))]
        ep["split"], ep["source"] = split, source
        text = _question(question, rng)
        records.append(Record(f"{prefix}{split}-{int(q)}-w{ways}-s{seed}{suffix}",
                              Image.fromarray(images[q]).convert("RGB"), text, [word],
                              {"episode": ep, "label": int(labels[q]), "task": "binding"}))
    return records


def _draw_classes(ep: dict, k: int, query_class: int, rng: np.random.Generator) -> list[int]:
    """Per demonstration, the index (into the episode's classes) of its class, before shuffling."""
    ways = len(ep["classes"])
    draw = ep.get("draw", "balanced")
    if draw == "random":
        return [int(j) for j in rng.integers(0, ways, size=k)]
    if draw == "rare":  # the query's class once, the others as evenly as k - 1 allows
        target = ep["classes"].index(query_class)
        others = [j for j in range(ways) if j != target]
        return [target] + [others[int(i)] for i in np.arange(k - 1) % len(others)]
    extra = [int(c) for c in rng.permutation(ways)[: k % ways]]
    return [j for j in range(ways) for _ in range(k // ways + (1 if j in extra else 0))]


def episode_demos(record: Record, k: int, seed: int = 0) -> list[Record]:
    """k demonstrations of the record's episode, drawn as its episode says (balanced, random or rare)
    and ordered by ``seed``: every method sees the same demonstrations for a given seed."""
    ep = record.extra["episode"]
    per_class = len(ep["candidates"][0])
    rng = np.random.default_rng([ep["seed"], seed])
    wanted = _draw_classes(ep, k, int(record.extra["label"]), rng)
    most = max(np.bincount(wanted, minlength=len(ep["classes"])))
    if most > per_class:
        raise AimError(f"record {record.id}: its episode holds {per_class} demonstrations per class, fewer than "
                       f"{k} shots need; build the records with max_shots >= {k}")
    picks = []
    for j in range(len(ep["classes"])):
        count = wanted.count(j)
        picks += [(j, ep["candidates"][j][i]) for i in rng.permutation(per_class)[:count]]
    picks = [picks[i] for i in rng.permutation(len(picks))]
    images, _ = _images(ep["split"], ep.get("source", "fashion-mnist"))
    return [Record(f"{ep['split']}-{i}:{ep['words'][j]}", Image.fromarray(images[i]).convert("RGB"), record.question,
                   [ep["words"][j]], {"label": ep["classes"][j]}) for j, i in picks]
