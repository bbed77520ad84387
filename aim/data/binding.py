"""Label binding with made-up words: Fashion-MNIST classes renamed, per episode, to words that mean
nothing, so a model can only answer from the demonstrations it is shown.

An episode draws ``ways`` classes and as many made-up words; the query is an image of one of those
classes and its answer is that class's word. The episode's demonstrations (other images of the
same classes, labelled with the episode's words) come with the record: ``record.extra["episode"]``
holds everything needed, and :func:`episode_demos` returns k of them, balanced over the classes, in
prompt order. Words are drawn from two disjoint pools: ``train`` (7,500 words, for training) and
``test`` (400 words never seen in training, for evaluation).
"""
from __future__ import annotations

import functools
import itertools
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import AimError
from .record import Record

QUESTION = "What is this?"
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
TRAIN_WORDS, TEST_WORDS = 7500, 400
WAYS = (2, 5)


def made_up_words(pool: str = "test") -> list[str]:
    """The word pool of ``train`` or ``test``: consonant-vowel words of two or three syllables, the
    two pools disjoint (fixed seed, the same on every machine)."""
    return list(_word_pool(pool))


@functools.lru_cache(maxsize=2)
def _word_pool(pool: str) -> tuple:
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    words = ["".join(p) for p in itertools.product(syllables, repeat=2)]
    words += ["".join(p) for p in itertools.product(syllables, repeat=3)]
    order = np.random.default_rng(20261122).permutation(len(words))
    picked = [words[i] for i in order[: TEST_WORDS + TRAIN_WORDS]]
    if pool == "test":
        return tuple(picked[:TEST_WORDS])
    if pool == "train":
        return tuple(picked[TEST_WORDS:])
    raise AimError(f"word pool {pool!r}: use train or test")


SOURCES = ("fashion-mnist", "patterns")


@functools.lru_cache(maxsize=4)
def _images(split: str, source: str = "fashion-mnist"):
    if source == "patterns":  # procedural textures: a domain no checkpoint saw (aim/data/patterns.py)
        from .patterns import load_arrays
    elif source == "fashion-mnist":
        from .fashion_mnist import load_arrays
    else:
        raise AimError(f"label-binding images {source!r}: use one of {', '.join(SOURCES)}")
    return load_arrays(split)


def episode(images: np.ndarray, labels: np.ndarray, words: list[str], ways: int, max_shots: int,
            rng: np.random.Generator, query: Optional[int] = None) -> dict:
    """One episode as plain data: classes, their words, the query index and, per class, candidate
    demonstration indices (never the query)."""
    if query is None:
        classes = [int(c) for c in rng.choice(10, size=ways, replace=False)]
        query = int(rng.choice(np.flatnonzero(labels == classes[int(rng.integers(ways))])))
    else:
        others = [c for c in range(10) if c != int(labels[query])]
        classes = [int(labels[query])] + [int(c) for c in rng.choice(others, size=ways - 1, replace=False)]
        classes = [classes[i] for i in rng.permutation(ways)]
    names = [str(w) for w in rng.choice(words, size=ways, replace=False)]
    per_class = 2 * -(-max_shots // ways)  # twice what max_shots needs, so seeds draw different demos
    candidates = []
    for c in classes:
        pool = np.flatnonzero(labels == c)
        pool = pool[pool != query]
        candidates.append([int(i) for i in rng.choice(pool, size=per_class, replace=False)])
    return {"classes": classes, "words": names, "query": int(query), "candidates": candidates,
            "seed": int(rng.integers(2**31))}


def binding_records(split: str = "test", ways: int = 2, n: int = 200, seed: int = 0, max_shots: int = 16,
                    words: str = "test", source: str = "fashion-mnist") -> list[Record]:
    """``n`` label-binding queries on ``split`` images of ``source`` (Fashion-MNIST, or the procedural
    ``patterns``) with words from the ``words`` pool. Queries are the first ``n`` of a seeded
    permutation of the split; the seed also draws the classes, words and demonstrations of each episode."""
    if not 2 <= ways <= 10:
        raise AimError(f"label binding needs 2 to 10 ways, got {ways}")
    images, labels = _images(split, source)
    pool = made_up_words(words)
    rng = np.random.default_rng([seed, ways])
    queries = rng.permutation(len(labels))[:n]
    records = []
    for q in queries:
        ep = episode(images, labels, pool, ways, max_shots, rng, query=int(q))
        word = ep["words"][ep["classes"].index(int(labels[q]))]
        ep["split"], ep["source"] = split, source
        prefix = "" if source == "fashion-mnist" else f"{source}-"
        records.append(Record(f"{prefix}{split}-{int(q)}-w{ways}-s{seed}", Image.fromarray(images[q]).convert("RGB"),
                              QUESTION, [word], {"episode": ep, "label": int(labels[q]), "task": "binding"}))
    return records


def episode_demos(record: Record, k: int, seed: int = 0) -> list[Record]:
    """k demonstrations of the record's episode, balanced over its classes (as evenly as k allows),
    drawn and ordered by ``seed``: every method sees the same demonstrations for a given seed."""
    ep = record.extra["episode"]
    ways, per_class = len(ep["classes"]), len(ep["candidates"][0])
    if -(-k // ways) > per_class:
        raise AimError(f"record {record.id}: its episode holds {per_class} demonstrations per class, fewer than "
                       f"{k} shots need; build the records with max_shots >= {k}")
    rng = np.random.default_rng([ep["seed"], seed])
    extra_classes = [int(c) for c in rng.permutation(ways)[: k % ways]]
    picks = []
    for j in range(ways):
        count = k // ways + (1 if j in extra_classes else 0)
        picks += [(j, ep["candidates"][j][i]) for i in rng.permutation(per_class)[:count]]
    picks = [picks[i] for i in rng.permutation(len(picks))]
    images, _ = _images(ep["split"], ep.get("source", "fashion-mnist"))
    return [Record(f"{ep['split']}-{i}:{ep['words'][j]}", Image.fromarray(images[i]).convert("RGB"), QUESTION, [ep["words"][j]],
                   {"label": ep["classes"][j]}) for j, i in picks]
