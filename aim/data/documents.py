"""Interleaved image-text documents (OBELICS layout) for training fusers on web-style data.

A document is two aligned lists of one length, ``images`` and ``texts``: at each position exactly
one of them is set (an image path / Image feature, or a text), the other is null, in reading order,
which is how OBELICS stores its documents. Read from a JSONL file (one document per line, image
paths relative to the file) or a ``datasets`` folder / parquet file with those two columns. Each
image is paired with the text that follows it (truncated to ``max_chars``); a document gives one
training sequence of its pairs. MMC4's ``image_info`` + ``text_list`` convert to this layout by
putting each image before its ``matched_text_index`` sentence (docs/training.md).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

from ..errors import AimError
from .fields import DatasetError, inside_folder

logger = logging.getLogger(__name__)

NEEDED = "each document needs aligned 'images' and 'texts' lists (OBELICS layout: one of the two set per position)"


def is_documents(path: str) -> bool:
    """Whether ``path`` is a JSONL file whose first row is a document (has images and texts lists)."""
    if not (os.path.isfile(path) and path.endswith(".jsonl")):
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(row, dict) and isinstance(row.get("images"), list) and \
                    isinstance(row.get("texts"), list)
    return False


def pairs_of(images: list, texts: list, source: str, index: int, max_chars: int) -> list[tuple[Any, str]]:
    """(image, following text) pairs of one document."""
    if not isinstance(images, list) or not isinstance(texts, list) or len(images) != len(texts):
        raise DatasetError(f"{source}, document {index}: {NEEDED}; got lengths "
                           f"{len(images) if isinstance(images, list) else '?'} and "
                           f"{len(texts) if isinstance(texts, list) else '?'}")
    pairs, pending = [], None
    for image, text in zip(images, texts):
        if image is not None:
            pending = image
        elif text and pending is not None:
            pairs.append((pending, text.strip()[:max_chars]))
            pending = None
    return pairs


def _utf8_lines(rows, path: str):
    """(index, line) of a text file's lines, with a DatasetError for bytes that are not UTF-8."""
    try:
        yield from enumerate(rows)
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start} of a line); save the file as "
                           "UTF-8, one JSON document per line") from None


def load_documents(path: str, limit: Optional[int] = None, max_chars: int = 200) -> list[list[tuple[Any, str]]]:
    """Documents as lists of (image, text) pairs; documents with fewer than two pairs are dropped.
    Images are paths (JSONL, made absolute) or what the datasets column holds."""
    docs = []
    if path.endswith(".jsonl"):
        folder = os.path.dirname(os.path.abspath(path))
        with open(path, encoding="utf-8", errors="strict") as f:
            rows = (line for line in f if line.strip())
            for i, line in _utf8_lines(rows, path):
                if limit is not None and i >= limit:
                    break
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DatasetError(f"{path}, document {i}: not a JSON object ({err}); write one document per "
                                       "line") from None
                if not isinstance(row, dict):
                    raise DatasetError(f"{path}, document {i}: {NEEDED}; got a {type(row).__name__}")
                pairs = pairs_of(row.get("images"), row.get("texts"), path, i, max_chars)
                docs.append([(inside_folder(img, folder, f"{path}, document {i}"), t) for img, t in pairs])
    elif os.path.isdir(path) or path.endswith(".parquet"):
        import datasets

        ds = datasets.load_from_disk(path) if os.path.isdir(path) else datasets.Dataset.from_parquet(path)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        missing = [c for c in ("images", "texts") if c not in ds.column_names]
        if missing:
            raise DatasetError(f"{path}: no {' or '.join(missing)} column ({NEEDED})")
        for i, row in enumerate(ds):
            if limit is not None and i >= limit:
                break
            docs.append(pairs_of(row["images"], row["texts"], path, i, max_chars))
    else:
        raise AimError(f"{path}: interleaved documents are read from a .jsonl file, a .parquet file or a datasets "
                       "folder with 'images' and 'texts' columns")
    kept = [d for d in docs if len(d) >= 2]
    logger.info("%s: %d documents, %d with two or more image-text pairs", path, len(docs), len(kept))
    if not kept:
        raise DatasetError(f"{path}: no document has two image-text pairs; a training sequence needs a demonstration "
                           "and a query")
    return kept
