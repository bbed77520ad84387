"""Zero-shot answering of records in batches, with scores."""
from __future__ import annotations

import logging
from typing import Sequence

from tqdm.auto import tqdm

from ..backbones.base import Backbone, Generation
from ..data.record import Record
from ..images import load_image
from .metrics import contains_match, exact_match, vqa_accuracy

logger = logging.getLogger(__name__)


def answer_records(backbone: Backbone, records: Sequence[Record], batch_size: int = 16, use_image: bool = True,
                   max_new_tokens: int = 10, desc: str = "answering") -> list[Generation]:
    """Greedy zero-shot answers; ``use_image=False`` asks the question alone (the no-image baseline)."""
    out: list[Generation] = []
    for i in tqdm(range(0, len(records), batch_size), desc=desc, unit="batch", leave=False):
        chunk = records[i:i + batch_size]
        images = [load_image(r.image) if use_image else None for r in chunk]
        out += backbone.answer(images, [r.question for r in chunk], max_new_tokens=max_new_tokens)
    return out


def score(predictions: Sequence[str], records: Sequence[Record]) -> dict:
    """Mean official VQA accuracy, exact match and answer-contained rate."""
    n = max(1, len(records))
    return {
        "vqa_accuracy": sum(vqa_accuracy(p, r.answers) for p, r in zip(predictions, records)) / n,
        "exact_match": sum(exact_match(p, r.answers) for p, r in zip(predictions, records)) / n,
        "contains": sum(contains_match(p, r.answers) for p, r in zip(predictions, records)) / n,
        "n": len(records),
    }
