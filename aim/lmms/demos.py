"""Demonstrations for an lmms-eval task, read through the task's own functions, and the bank they
are compressed into once.

A demonstration is one document of the task's few-shot split (lmms-eval's rule: ``fewshot_split``,
else ``training_split``, else ``validation_split``, else ``test_split``), read as the task reads a
query: its first visual (``doc_to_visual``), its prompt (``doc_to_text``) and its target
(``doc_to_target``; an index into ``doc_to_choice`` for multiple-choice tasks, the first of a list
of answers), so that a demonstration looks exactly like the task's prompt with its answer. Its id
is ``{split}-{row}``, so a query of the same split is never shown itself.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from typing import Any, Optional

from PIL import Image

from ..cache import cache_dir
from ..data.record import Record
from ..errors import AimError
from ..images import load_image

logger = logging.getLogger(__name__)


def fewshot_split(task) -> str:
    """The split lmms-eval draws a task's few-shot documents from."""
    config = task.config
    for split in (config.fewshot_split, config.training_split, config.validation_split, config.test_split):
        if split is not None:
            return split
    raise AimError(f"task {config.task}: no split to draw demonstrations from (set fewshot_split or training_split in "
                   "its YAML, or pass pool=SPEC in --model_args)")


def visual_of(task_name: str, visuals: Any) -> Optional[Image.Image]:
    """The first visual lmms-eval's ``doc_to_visual`` gives (a PIL image or a file path), as RGB; None for
    text-only documents."""
    if visuals is None:
        return None
    if not isinstance(visuals, (list, tuple)):
        visuals = [visuals]
    if not visuals:
        return None
    first = visuals[0]
    if isinstance(first, dict) and first.get("path"):
        first = first["path"]
    if isinstance(first, (str, os.PathLike, Image.Image)):
        return load_image(first)
    raise AimError(f"task {task_name}: doc_to_visual gave a {type(first).__name__}; aim reads one image per document "
                   "(a PIL image or an image file path). Video and audio tasks are not supported")


def target_text(task, doc: dict) -> str:
    """A document's answer as a demonstration shows it."""
    target = task.doc_to_target(doc)
    if isinstance(target, int) and task.config.doc_to_choice is not None:
        return str(task.doc_to_choice(doc)[target])
    if isinstance(target, (list, tuple)):
        if not target:
            raise AimError(f"task {task.config.task}: a document's target is an empty list; it cannot be a demonstration")
        target = target[0]
    return str(target)


def task_records(task, split: str, limit: Optional[int] = None) -> list[Record]:
    """The first ``limit`` documents (all when None) of ``split`` as demonstration records."""
    docs = task.dataset[split]
    n = len(docs) if limit is None else min(int(limit), len(docs))
    name = task.config.task
    out = []
    for row in range(n):
        doc = docs[row]
        image = visual_of(name, task.doc_to_visual(doc))
        if image is None:
            raise AimError(f"task {name}: document {row} of split {split} has no image; fused and raw demonstrations "
                           "need one (use method=text or method=zero for text-only tasks)")
        out.append(Record(f"{split}-{row}", image, str(task.doc_to_text(doc)), [target_text(task, doc)]))
    return out


def bank_folder(label: str, parts: dict) -> str:
    """Where the bank for these demonstrations, backbone and fuser is cached: one folder per digest."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")[:60]
    return os.path.join(cache_dir(), "lmms-eval", "banks", f"{name}-{digest}")


def records_digest(records: list[Record]) -> str:
    """A digest of the demonstrations' ids, prompts and answers (the dataset's own fingerprint goes
    beside it for the images)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([str(r.id), r.question, list(r.answers)]).encode())
    return h.hexdigest()[:16]
