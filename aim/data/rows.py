"""Rows of task-specific datasets mapped onto the fields every reader takes (``question_id``,
``image``, ``question``, ``answers``, extra fields kept): caption rows (``captions.caption_row``)
and Hateful Memes rows (``hateful_memes.hateful_row``). Other rows pass unchanged."""
from __future__ import annotations

from .captions import caption_row
from .fields import where
from .hateful_memes import hateful_row


def adapt_row(row: dict, index: int, source: str) -> dict:
    at = where(source, index, row.get("id"))
    for adapt in (caption_row, hateful_row):
        mapped = adapt(row, at)
        if mapped is not None:
            return mapped
    return row
