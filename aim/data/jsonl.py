"""The generic JSONL format: one JSON object a line,

    {"question_id": 1, "image": "images/1.jpg", "question": "What colour is the bus?", "answers": ["red", "dark red"]}

``image`` is relative to the JSONL file's folder (or to ``images`` when given) or absolute; ``id``
may stand for ``question_id`` and ``answer`` (one string) for ``answers``. The answers keep the
file's order: the first is the one a demonstration shows. Other fields go to ``Record.extra``.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

from .fields import (DatasetError, answers_of, check_unique_ids, extra_of, image_file, missing, question_of,
                     record_id, where)
from .record import Record
from .rows import adapt_row

logger = logging.getLogger(__name__)


def load_jsonl(path: str, limit: Optional[int] = None, images: Optional[str] = None) -> list[Record]:
    """The first ``limit`` records (all when None) of a JSONL file; image files must exist."""
    folder = images or os.path.dirname(os.path.abspath(path))
    try:
        return _load_jsonl(path, limit, folder)
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start} of a line); save the file as "
                           "UTF-8, one JSON object per line") from None


def _load_jsonl(path: str, limit: Optional[int], folder: str) -> list[Record]:
    records: list[Record] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if limit is not None and len(records) >= limit:
                break
            if not line.strip():
                continue
            index = len(records)
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{where(path, index)} (line {line_no}): not JSON: {err.msg} at column {err.colno} "
                                   "(each line must hold one JSON object)") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{where(path, index)} (line {line_no}): a JSON {type(row).__name__}, not an "
                                   "object (each line must hold one {\"question_id\", \"image\", \"question\", "
                                   "\"answers\"} object)")
            row = adapt_row(row, index, path)
            rid = record_id(row, index, path)
            question = question_of(row, index, path, rid)
            answers = answers_of(row, index, path, rid, annotators=False)
            name = row.get("image")
            if not isinstance(name, str) or not name:
                raise missing(path, index, rid, "image", "every record needs an image path, relative to the "
                              "JSONL file's folder")
            image = image_file(name, folder, where(path, index, rid),
                               f"paths are relative to {folder}; fix the path or copy the image there")
            used = ("question_id", "id", "question", "answers", "answer", "image")
            records.append(Record(rid, image, question, answers, extra_of(row, used)))
    check_unique_ids(records, path)
    logger.info("read %d records from %s", len(records), path)
    return records
