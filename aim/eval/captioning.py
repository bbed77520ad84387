"""Captioning metrics through ``pycocoevalcap``, the library open_flamingo and lmms-eval score with.

Predictions and references go through its PTB tokenizer (Stanford CoreNLP's ``PTBTokenizer``,
lower-cased, punctuation dropped), which runs on Java; then ``Cider`` (CIDEr-D as COCO computes it,
n=4, sigma=6, document frequencies from the references of the scored set), ``Bleu(4)`` (BLEU-4),
``Rouge`` (ROUGE-L) and, when asked, ``Meteor`` (also Java). SPICE is left out: it downloads
Stanford models at first use. CIDEr depends on the whole set (its document frequencies), so it is a
corpus figure: computed per seed over a cell's samples, never per sample.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from typing import Sequence

from ..errors import MetricError

logger = logging.getLogger(__name__)

def check_java() -> str:
    """The path of ``java``, or a MetricError that says how to install it."""
    java = shutil.which("java")
    if java is None:
        raise MetricError("captioning metrics need a Java runtime for pycocoevalcap's PTB tokenizer, and none is "
                          "on PATH: install one (Debian/Ubuntu: apt-get install default-jre-headless; the README's "
                          "`make setup` does it as root), or score with --metric exact_match")
    return java


def scorer_versions() -> dict:
    """Which library produced the caption figures: name, version and tokenizer."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("pycocoevalcap")
    except PackageNotFoundError:
        v = None
    return {"library": "pycocoevalcap", "version": v, "tokenizer": "PTBTokenizer (stanford-corenlp-3.4.1, Java)"}


def _import():
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as err:
        raise MetricError(f"captioning metrics need pycocoevalcap ({err}): pip install pycocoevalcap") from None
    return PTBTokenizer, Cider, Bleu, Rouge


@contextlib.contextmanager
def _java_quiet():
    """The Java tokenizer reports its speed on the process's stderr; hide it unless aim logs at DEBUG."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tokenize(captions: dict) -> dict:
    """``{key: [caption, ...]}`` -> ``{key: [tokenized caption, ...]}`` through the PTB tokenizer."""
    check_java()
    PTBTokenizer, *_ = _import()
    try:
        with _java_quiet():
            return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    except (subprocess.CalledProcessError, OSError) as err:
        raise MetricError(f"pycocoevalcap's PTB tokenizer failed ({err}); check that `java -version` runs") from None


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]],
                   meteor: bool = False) -> dict:
    """Corpus CIDEr, BLEU-4 and ROUGE-L (and METEOR when asked) of one caption per image against its
    references, after PTB tokenization; the figures pycocoevalcap itself reports."""
    if len(predictions) != len(references):
        raise MetricError(f"{len(predictions)} captions but {len(references)} reference lists")
    if not predictions:
        raise MetricError("no captions to score")
    for i, refs in enumerate(references):
        if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise MetricError(f"caption {i}: its references are {list(refs)!r}; every image needs at least one "
                              "non-empty reference caption")
    _, Cider, Bleu, Rouge = _import()
    keys = [str(i) for i in range(len(predictions))]
    # one Java run tokenizes both sides ("g" references, "r" the caption to score)
    tokens = tokenize({**{"g" + k: list(r) for k, r in zip(keys, references)},
                       **{"r" + k: [p] for k, p in zip(keys, predictions)}})
    gts, res = {k: tokens["g" + k] for k in keys}, {k: tokens["r" + k] for k in keys}
    out = {"cider": float(Cider().compute_score(gts, res)[0])}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out["bleu4"] = float(bleu[3])
    out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        out["meteor"] = float(Meteor().compute_score(gts, res)[0])
    logger.debug("caption scores over %d images: %s", len(predictions), out)
    return out
