"""Hateful Memes as a binary classification task: its ``train.jsonl`` / ``dev_seen.jsonl`` rows
``{"id", "img": "img/42953.png", "label": 0 or 1, "text"}`` (images relative to the JSONL's folder),
and lmms-eval's parquet rows with the same fields (``img`` or ``image`` an Image feature).

Each row becomes a record asking open_flamingo's question, ``is an image with: '{text}' written on
it. Is it hateful?``, with the classes ``no`` and ``yes`` (``extra["classes"]``; ``yes`` is the
positive class, ``extra["positive"]``), so ``aim icl-eval`` scores it with ROC-AUC, by rank
classification (``--scoring likelihood``, open_flamingo's method) or by the generated answer.
"""
from __future__ import annotations

from typing import Optional

from .fields import DatasetError

#: open_flamingo's Hateful Memes prompt, after the image
QUESTION = "is an image with: '{text}' written on it. Is it hateful?"
CLASSES = ["no", "yes"]


def is_hateful_row(row: dict) -> bool:
    return "question" not in row and "label" in row and "text" in row and ("img" in row or "image" in row)


def hateful_row(row: dict, at: str) -> Optional[dict]:
    """A Hateful Memes row in the fields every reader takes, or None when the row is not one;
    ``at`` names the record in errors."""
    if not is_hateful_row(row):
        return None
    value = row["label"]
    if value not in (0, 1, True, False, "0", "1"):
        raise DatasetError(f"{at}: its label is {value!r}; Hateful Memes labels are 0 (not hateful) or 1 "
                           "(hateful) (fix the record)")
    rest = {k: v for k, v in row.items() if k not in ("img", "image", "label")}
    return {**rest, "image": row.get("img", row.get("image")), "question": QUESTION.format(text=row["text"]),
            "answers": [CLASSES[int(value)]], "label": int(value), "classes": CLASSES, "positive": "yes",
            "task": "classification"}
