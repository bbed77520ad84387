"""Rows of task-specific datasets mapped onto the fields every reader takes (``question_id``,
``image``, ``question``, ``answers``, extra fields kept): caption rows (``captions.caption_row``)
and Hateful Memes rows (``hateful_memes.hateful_row``). Other rows pass unchanged."""
from __future__ import annotations

from .captions import caption_row
from .fields import DatasetError, where
from .hateful_memes import hateful_row


def adapt_row(row: dict, index: int, source: str) -> dict:
    for adapt in (caption_row, hateful_row):
        mapped = adapt(row)
        if mapped is not None:
            if "_error" in mapped:
                raise DatasetError(f"{where(source, index, row.get('id'))}: {mapped['_error']} (fix the record)")
            return mapped
    return row
