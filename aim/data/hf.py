"""Hugging Face ``datasets`` folders (``save_to_disk``) and parquet files, with the field names of
lmms-eval's VQAv2, OK-VQA, VizWiz-VQA and TextVQA:

    question_id (int or str), question, answers (list of strings, or of {"answer", ...} dicts),
    image (an Image feature: PIL, or {"bytes", "path"}; or a path string), multiple_choice_answer (optional)

``id`` may stand for ``question_id`` and ``answer`` for ``answers``. The answers are annotators'
answers: all kept, reordered so that ``multiple_choice_answer`` (if present, else the most common
answer) comes first. Other fields go to ``Record.extra``.

A folder saved as a ``DatasetDict``, or a parquet folder holding several splits (files named
``<split>-00000-of-00003.parquet`` or ``<split>.parquet``, or a ``<split>/`` folder), is read at
the split given as ``PATH:SPLIT``, else its only split, else ``test``, else ``validation``.
Images stored as bytes are opened lazily (decoded at first use); a corrupt one then raises an
ImageError that names the dataset and the record.
"""
from __future__ import annotations

import glob
import hashlib
import io
import logging
import os
import re
from typing import Any, Iterable, Iterator, Optional

from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from .fields import (DatasetError, answers_of, check_unique_ids, extra_of, image_file, missing, question_of,
                     record_id, where)
from .record import Record
from .rows import adapt_row

logger = logging.getLogger(__name__)
PREFERRED_SPLITS = ("test", "validation")


def choose_split(splits: list[str], split: Optional[str], source: str) -> str:
    if split:
        if split in splits:
            return split
        raise DatasetError(f"{source} has no split {split!r} (its splits: {', '.join(splits)}; use {source}:SPLIT)")
    if len(splits) == 1:
        return splits[0]
    for name in PREFERRED_SPLITS:
        if name in splits:
            logger.info("%s: reading split %s of %s", source, name, ", ".join(splits))
            return name
    raise DatasetError(f"{source} holds the splits {', '.join(splits)}: pick one with {source}:SPLIT")


def open_image_bytes(data: bytes, label: str) -> Image.Image:
    """A PIL image over ``data``, header read now, pixels decoded at first use; a failure either
    time raises an ImageError naming ``label`` (the dataset and record)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.info["sha256"] = hashlib.sha256(data).hexdigest()  # what a run folder fingerprints, undecoded
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{label}: the stored image is not a readable image ({err.__class__.__name__}: {err}; "
                         "re-save the dataset with valid images or drop the record)") from None
    decode = image.load

    def load():
        try:
            return decode()
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"cannot decode the image of {label}: {err.__class__.__name__}: {err} (the stored "
                             "image is corrupt; re-save the dataset with valid images or drop the record)") from err

    image.load = load  # convert(), resize() and friends call self.load() first
    return image


def image_of(value: Any, folder: str, label: str) -> Any:
    """A record's image from an Image feature value: a PIL image, ``{"bytes", "path"}`` or a path."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and value.get("bytes"):
        return open_image_bytes(value["bytes"], label)
    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str) or not path:
        raise DatasetError(f"{label}: no 'image' (expected an Image feature, {{\"bytes\", \"path\"}} or a path; "
                           "add the images to the dataset)")
    return image_file(path, folder, label, f"relative image paths are read from {folder}; store the image "
                      "bytes in the dataset (cast the column to datasets.Image) or fix the path")


def row_record(row: dict, index: int, source: str, folder: str) -> Record:
    row = adapt_row(row, index, source)
    rid = record_id(row, index, source)
    question = question_of(row, index, source, rid)
    answers = answers_of(row, index, source, rid, annotators=True, preferred=row.get("multiple_choice_answer"))
    if "image" not in row:
        raise missing(source, index, rid, "image")
    image = image_of(row["image"], folder, where(source, index, rid))
    return Record(rid, image, question, answers, extra_of(row, ("question_id", "id", "question", "answers",
                                                                "answer", "image")))


def _records(rows: Iterable[dict], source: str, folder: str) -> list[Record]:
    records = [row_record(row, i, source, folder) for i, row in enumerate(rows)]
    check_unique_ids(records, source)
    logger.info("read %d records from %s", len(records), source)
    return records


def is_hf_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or os.path.isfile(os.path.join(path, "state.json"))


def load_hf_folder(path: str, split: Optional[str] = None, limit: Optional[int] = None) -> list[Record]:
    """The first ``limit`` rows of a ``save_to_disk`` folder (a Dataset, or a DatasetDict's split)."""
    import datasets

    try:
        ds = datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DatasetError(f"{path}: not a readable datasets folder ({err}; write one with "
                           "Dataset.save_to_disk or DatasetDict.save_to_disk)") from None
    source = path
    if isinstance(ds, datasets.DatasetDict):
        name = choose_split(list(ds), split, path)
        ds, source = ds[name], f"{path}:{name}"
    elif split:
        raise DatasetError(f"{path} holds one Dataset, not splits (drop ':{split}')")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if isinstance(ds.features.get("image"), datasets.Image):
        ds = ds.cast_column("image", datasets.Image(decode=False))  # bytes, opened lazily by image_of
    return _records(ds, source, path)


_SHARD = re.compile(r"(.+?)(?:-\d+-of-\d+)?")


def parquet_split(path: str, root: str) -> str:
    """``data/validation-00000-of-00003.parquet`` -> validation; ``train.parquet`` -> train;
    ``validation/0000.parquet`` -> validation."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name = _SHARD.fullmatch(stem).group(1)
    parent = os.path.relpath(os.path.dirname(path), root)
    return os.path.basename(parent) if name.isdigit() and parent != "." else name


def _parquet_rows(files: list[str], limit: Optional[int]) -> Iterator[dict]:
    import pyarrow.parquet as pq

    left = limit
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=256):
            rows = batch.to_pylist()
            if left is not None:
                rows = rows[:left]
                left -= len(rows)
            yield from rows
            if left == 0:
                return


def load_parquet(path: str, split: Optional[str] = None, limit: Optional[int] = None) -> list[Record]:
    """The first ``limit`` rows of a parquet file, or of a folder's parquet files of one split (name order)."""
    if os.path.isfile(path):
        if split:
            raise DatasetError(f"{path} is one parquet file, not a folder of splits (drop ':{split}')")
        return _records(_parquet_rows([path], limit), path, os.path.dirname(os.path.abspath(path)))
    files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    if not files:
        raise DatasetError(f"{path}: no .parquet files (point at a parquet file or a folder holding them)")
    by_split: dict[str, list[str]] = {}
    for file in files:
        by_split.setdefault(parquet_split(file, path), []).append(file)
    name = choose_split(sorted(by_split), split, path)
    source = path if len(by_split) == 1 else f"{path}:{name}"
    return _records(_parquet_rows(by_split[name], limit), source, path)
