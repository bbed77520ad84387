"""Label vocabularies for label binding: words a model can only tie to images through the
demonstrations it is shown.

Kinds (``KINDS``), each with a ``train`` pool (for training) and a disjoint ``test`` pool:
- ``cv``: consonant-vowel words of two or three syllables ("kato", "rimulu"); the original pools;
- ``real``: ordinary English words used arbitrarily ("kettle" for a cat);
- ``number``: numbers from 0 to 999;
- ``multi``: two-word labels, a real word and a consonant-vowel word ("silver toma");
- ``pseudo``: ordinary-looking made-up words ("blicket", "frandle"), held out as a whole kind:
  only its ``test`` pool exists, so no checkpoint ever trains on a word of this shape.
Every pool is drawn with a fixed seed: the same words on every machine.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np

from ..errors import AimError

KINDS = ("cv", "real", "number", "multi", "pseudo")
HELD_OUT_KINDS = ("pseudo",)
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
TRAIN_WORDS, TEST_WORDS = 7500, 400

REAL_WORDS = """
anchor apple arrow badge basket bell blanket bottle bridge brush bucket button cabin camera candle canoe
carpet castle chair chimney clock cloud coin comb compass cookie copper cotton crown cup curtain desk diamond
door drum eagle engine feather fence finger flag flute forest fork fountain garden gate glass globe glove
hammer harbor helmet hill honey horn island jacket jar jewel kettle key kite ladder lamp lantern leaf lemon
letter lizard magnet maple marble meadow mirror mountain needle nest olive orange oven paddle paper pencil
pepper piano pillow planet pocket pond pumpkin puzzle quilt rabbit radio ribbon river rocket saddle salt
scarf shadow shell shovel silver sock spoon stamp statue stone storm sugar table teapot thread ticket tiger
tower train trumpet tunnel turtle umbrella valley velvet violin wagon wallet window wizard yarn zipper
amber autumn banner barrel beacon biscuit blossom bramble canyon carrot cedar cherry circus cobalt copper
crystal dagger dolphin ember falcon fiddle garnet glacier hazel hollow ivory jasmine juniper lagoon
lavender meadow mitten nickel orchard otter pebble pepper pilgrim plum quartz raven saffron sapphire
scarlet sparrow spruce thistle thunder timber topaz tulip walnut willow winter
""".split()

_ONSETS = ("b bl br ch cl cr d dr f fl fr g gl gr h j k l m n p pl pr r s sh sk sl sn sp st t th tr v w z"
           ).split()
_NUCLEI = "a e i o u ee oo ai ou".split()
_CODAS = ["", "b", "ck", "d", "g", "k", "l", "m", "n", "nd", "ng", "nk", "p", "r", "rk", "sh", "sk", "st", "t", "x"]
_ENDINGS = ["", "le", "er", "et", "y", "en", "ish", "o", "a"]


def _split(words: list, test: int, seed: int) -> dict:
    order = np.random.default_rng(seed).permutation(len(words))
    picked = [words[i] for i in order]
    return {"test": tuple(picked[:test]), "train": tuple(picked[test:])}


@functools.lru_cache(maxsize=1)
def _cv() -> dict:
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    words = ["".join(p) for p in itertools.product(syllables, repeat=2)]
    words += ["".join(p) for p in itertools.product(syllables, repeat=3)]
    order = np.random.default_rng(20261122).permutation(len(words))
    picked = [words[i] for i in order[: TEST_WORDS + TRAIN_WORDS]]
    return {"test": tuple(picked[:TEST_WORDS]), "train": tuple(picked[TEST_WORDS:])}


@functools.lru_cache(maxsize=1)
def _real() -> dict:
    return _split(sorted(set(REAL_WORDS)), 60, 20261207)


@functools.lru_cache(maxsize=1)
def _number() -> dict:
    return _split([str(n) for n in range(1000)], 150, 20261208)


@functools.lru_cache(maxsize=1)
def _multi() -> dict:
    rng = np.random.default_rng(20261209)
    pools = {}
    for pool, n in (("train", 4000), ("test", 300)):
        real, cv = _real()[pool], _cv()[pool]
        pairs = {f"{real[int(rng.integers(len(real)))]} {cv[int(rng.integers(len(cv)))]}" for _ in range(2 * n)}
        pools[pool] = tuple(sorted(pairs)[:n])
    return pools


@functools.lru_cache(maxsize=1)
def _pseudo() -> dict:
    taken = set(REAL_WORDS) | set(_cv()["train"]) | set(_cv()["test"])
    words = set()
    for onset, nucleus, coda, ending in itertools.product(_ONSETS, _NUCLEI, _CODAS, _ENDINGS):
        word = onset + nucleus + coda + ending
        if 4 <= len(word) <= 8 and word not in taken and not (coda == "" and ending == ""):
            words.add(word)
    order = np.random.default_rng(20261210).permutation(sorted(words))
    return {"test": tuple(str(w) for w in order[:2000])}


_POOLS = {"cv": _cv, "real": _real, "number": _number, "multi": _multi, "pseudo": _pseudo}


def label_words(kind: str = "cv", pool: str = "test") -> list[str]:
    """The ``pool`` (train or test) of vocabulary ``kind``; held-out kinds have only a test pool."""
    if kind not in _POOLS:
        raise AimError(f"label vocabulary {kind!r}: use one of {', '.join(KINDS)}")
    if pool not in ("train", "test"):
        raise AimError(f"word pool {pool!r}: use train or test")
    if kind in HELD_OUT_KINDS and pool == "train":
        raise AimError(f"vocabulary {kind} is held out for evaluation: it has only a test pool")
    return list(_POOLS[kind]()[pool])


def made_up_words(pool: str = "test") -> list[str]:
    """The consonant-vowel pool ``train`` (7,500 words) or ``test`` (400 words never seen in training)."""
    return label_words("cv", pool)
