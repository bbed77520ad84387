"""The JSON files the VQA benchmarks ship: the official VQA pair (VQAv2, OK-VQA), VizWiz and TextVQA.

Official VQA pair: a questions file ``{"questions": [{"image_id", "question", "question_id"}]}``
and an annotations file ``{"annotations": [{"question_id", "answers": [{"answer", ...}] x10,
"multiple_choice_answer", ...}]}``, with COCO images named ``COCO_{split}_{image_id:012d}.jpg``
(``split`` being the files' ``data_subtype``, e.g. val2014), ``{image_id:012d}.jpg`` or
``{image_id}.jpg``. Point at it with
  - a folder holding one ``*questions*.json`` and its ``*annotations*.json`` (``FOLDER:val2014``
    picks a pair when there are several), images in ``FOLDER/<data_subtype>``, ``FOLDER/images``
    or ``FOLDER`` itself;
  - the questions file (its annotations file is found beside it by name:
    ``v2_OpenEnded_mscoco_val2014_questions.json`` goes with ``v2_mscoco_val2014_annotations.json``);
  - or ``vqa:questions=Q.json,annotations=A.json,images=FOLDER``.
The answers are the ten annotators' answers, all kept (the VQA metric needs them), reordered so
that ``multiple_choice_answer`` comes first (the demonstration answer).

VizWiz: a list ``[{"image": "VizWiz_val_00000000.jpg", "question", "answers": [{"answer",
"answer_confidence"}], "answerable", "answer_type"}]``; the id is the image name without extension;
images in ``<json folder>/<json name>`` (``Annotations/val.json`` -> ``val/``), ``../<json name>``,
``images`` or the JSON's folder.

TextVQA: ``{"data": [{"question_id", "image_id", "question", "answers": [str x10], ...}]}``; images
``{image_id}.jpg`` in ``train_images`` (``test_images`` for the test split) beside the JSON, or
``images``, or the JSON's folder.

Every reader takes ``images=FOLDER`` to name the image folder instead.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
from typing import Any, Optional

from ..errors import ImageError
from .fields import (DatasetError, answers_of, check_unique_ids, extra_of, image_file, missing, pick_folder,
                     question_of, record_id, where)
from .record import Record

logger = logging.getLogger(__name__)


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not JSON: {err.msg} at line {err.lineno}, column {err.colno} "
                           "(re-download the file or fix it)") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8 JSON") from None


def load_json_file(path: str, limit: Optional[int] = None, images: Optional[str] = None,
                   fmt: Optional[str] = None, split: Optional[str] = None) -> list[Record]:
    """A VQA questions or annotations file (with its partner), a VizWiz or a TextVQA file, a COCO
    captions or a Karpathy split file (``aim.data.captions``), told apart by their structure;
    ``fmt`` ("vqa", "vizwiz", "textvqa") insists on one. ``split`` is for Karpathy files."""
    from .captions import is_coco_captions, is_karpathy, load_coco_captions, load_karpathy

    data = read_json(path)
    if fmt is None and is_karpathy(data):
        return load_karpathy(path, data, split, limit, images)
    if split:
        raise DatasetError(f"{path}: ':{split}' picks a split of a folder or of a Karpathy split file; this file "
                           "is neither (drop the split)")
    if fmt is None and is_coco_captions(data):
        return load_coco_captions(path, data, limit, images)
    kind = fmt or kind_of(data)
    if kind == "vqa" and isinstance(data, dict) and "annotations" in data and "questions" not in data:
        return load_vqa_pair(partner(path, "annotations", "questions"), path, images, limit)
    if kind == "vqa" and isinstance(data, dict) and "questions" in data:
        return load_vqa_pair(path, partner(path, "questions", "annotations"), images, limit, questions_data=data)
    if kind == "vizwiz" and isinstance(data, list):
        return load_vizwiz(path, data, limit, images)
    if kind == "textvqa" and isinstance(data, dict) and isinstance(data.get("data"), list):
        return load_textvqa(path, data, limit, images)
    shapes = ('{"questions": [...]} or {"annotations": [...]} (VQA), a list of {"image", "question", "answers"} '
              '(VizWiz), {"data": [...]} (TextVQA), {"images", "annotations": [{"image_id", "caption"}]} (COCO '
              'captions) or {"images": [{"filename", "sentences", "split"}]} (Karpathy split)')
    if fmt:
        raise DatasetError(f"{path}: not a {fmt} file (expected {shapes}; drop the '{fmt}:' prefix or point at "
                           "the right file)")
    raise DatasetError(f"{path}: unknown JSON dataset format (expected {shapes}; for one object per line "
                       "use a .jsonl file, see docs/datasets.md)")


def kind_of(data: Any) -> Optional[str]:
    if isinstance(data, dict) and ("questions" in data or "annotations" in data):
        return "vqa"
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return "textvqa"
    if isinstance(data, list) and data and isinstance(data[0], dict) and "image" in data[0]:
        return "vizwiz"
    return None


# --- the official VQA pair --------------------------------------------------------------------------

def _pair_key(path: str) -> str:
    """A file name with "questions"/"annotations" and the task words taken out, so that partners match:
    v2_OpenEnded_mscoco_val2014_questions.json and v2_mscoco_val2014_annotations.json -> v2_mscoco_val2014_.json"""
    name = os.path.basename(path).lower()
    for word in ("openended_", "multiplechoice_", "questions", "annotations"):
        name = name.replace(word, "")
    return name


def partner(path: str, have: str, want: str) -> str:
    """The ``*{want}*.json`` beside ``path`` (a ``*{have}*`` file): the one whose name matches, or the only one."""
    folder = os.path.dirname(os.path.abspath(path))
    found = sorted(glob.glob(os.path.join(folder, f"*{want}*.json")))
    matching = [f for f in found if _pair_key(f) == _pair_key(path)]
    if len(matching) == 1 or len(found) == 1:
        return (matching or found)[0]
    listed = ", ".join(os.path.basename(f) for f in found) or "none"
    raise DatasetError(f"{path}: cannot tell which {want} file goes with it ({want} files in {folder}: {listed}); "
                       f"name both: vqa:questions=Q.json,annotations=A.json,images=FOLDER")


def pair_in_folder(folder: str, split: Optional[str] = None) -> tuple[str, str]:
    """(questions, annotations) files in ``folder``; ``split`` keeps those whose name contains it."""
    questions = sorted(glob.glob(os.path.join(folder, "*questions*.json")))
    if split:
        questions = [q for q in questions if split in os.path.basename(q)]
    if len(questions) != 1:
        listed = ", ".join(os.path.basename(q) for q in questions) or "none"
        raise DatasetError(f"{folder}: expected one *questions*.json{f' with {split!r} in its name' if split else ''}, "
                           f"found {listed} (pick one with {folder}:SPLIT, e.g. :val2014, or name the files: "
                           "vqa:questions=Q.json,annotations=A.json,images=FOLDER)")
    return questions[0], partner(questions[0], "questions", "annotations")


def coco_names(image_id: Any, subtype: Optional[str]) -> list[str]:
    """File names a COCO image may have, most specific first."""
    names = [f"COCO_{subtype}_{int(image_id):012d}.jpg"] if subtype and str(image_id).isdigit() else []
    if str(image_id).isdigit():
        names.append(f"{int(image_id):012d}.jpg")
    return names + [f"{image_id}.jpg", f"{image_id}.png"]


class ImageFolder:
    """A folder's file names, listed once, and a look-up of an image id among them: the candidate
    names first, then any ``..._<digits>.jpg`` whose number is the id (a COCO name of another split)."""

    NUMBERED = re.compile(r"(?:.*_)?0*(\d+)\.(?:jpe?g|png)", re.IGNORECASE)

    def __init__(self, folder: str):
        self.folder = folder
        self.names = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        self._by_number: Optional[dict[int, str]] = None

    def find(self, image_id: Any, names: list[str]) -> Optional[str]:
        for name in names:
            if name in self.names:
                return os.path.join(self.folder, name)
        if not str(image_id).isdigit():
            return None
        if self._by_number is None:
            self._by_number = {}
            for name in sorted(self.names):
                m = self.NUMBERED.fullmatch(name)
                if m:
                    self._by_number.setdefault(int(m.group(1)), name)
        name = self._by_number.get(int(image_id))
        return None if name is None else os.path.join(self.folder, name)


def load_vqa_pair(questions: str, annotations: str, images: Optional[str] = None, limit: Optional[int] = None,
                  questions_data: Any = None) -> list[Record]:
    """The first ``limit`` questions (in the questions file's order) with their annotations and images."""
    qdata = read_json(questions) if questions_data is None else questions_data
    adata = read_json(annotations)
    qs = qdata.get("questions") if isinstance(qdata, dict) else None
    anns = adata.get("annotations") if isinstance(adata, dict) else None
    if not isinstance(qs, list):
        raise DatasetError(f"{questions}: no \"questions\" list, so not a VQA questions file (expected "
                           "{\"questions\": [{\"image_id\", \"question\", \"question_id\"}]}; check the file name)")
    if not isinstance(anns, list):
        raise DatasetError(f"{annotations}: no \"annotations\" list, so not a VQA annotations file (expected "
                           "{\"annotations\": [{\"question_id\", \"answers\", ...}]}; a test split has no "
                           "annotations and cannot be read)")
    by_qid: dict[Any, dict] = {}
    for j, ann in enumerate(anns):
        by_qid[record_id(ann, j, annotations, ("question_id",))] = ann
    subtype = qdata.get("data_subtype") or adata.get("data_subtype")
    qs = qs if limit is None else qs[:limit]

    listed: dict[str, ImageFolder] = {}

    def listing(folder: str) -> ImageFolder:
        if folder not in listed:
            listed[folder] = ImageFolder(folder)
        return listed[folder]

    def holds_first(folder: str) -> bool:
        image_id = qs[0].get("image_id") if qs and isinstance(qs[0], dict) else None
        return image_id is not None and listing(folder).find(image_id, coco_names(image_id, subtype)) is not None

    anchor = os.path.dirname(os.path.abspath(questions))
    folder = images or pick_folder([os.path.join(anchor, subtype or "images"), os.path.join(anchor, "images"),
                                    anchor], holds_first)
    files = listing(folder)
    records = []
    for i, q in enumerate(qs):
        if not isinstance(q, dict):
            raise DatasetError(f"{where(questions, i)}: a JSON {type(q).__name__}, not an object (fix the file)")
        qid = record_id(q, i, questions, ("question_id",))
        question = question_of(q, i, questions, qid)
        if q.get("image_id") is None:
            raise missing(questions, i, qid, "image_id", "every question needs the image_id of its COCO image")
        ann = by_qid.get(qid)
        if ann is None:
            raise DatasetError(f"{where(questions, i, qid)}: no annotation with this question_id in {annotations} "
                               "(use the annotations file of the same split)")
        answers = answers_of(ann, i, annotations, qid, annotators=True, preferred=ann.get("multiple_choice_answer"))
        candidates = coco_names(q["image_id"], subtype)
        path = files.find(q["image_id"], candidates)
        if path is None:
            raise ImageError(f"{where(questions, i, qid)}: no image file {' or '.join(candidates)} in {folder} (name "
                             "the image folder with vqa:questions=Q.json,annotations=A.json,images=FOLDER)")
        extra = {**extra_of(ann, ("question_id", "answers")), **extra_of(q, ("question_id", "question"))}
        records.append(Record(qid, path, question, answers, extra))
    check_unique_ids(records, questions)
    logger.info("read %d records from %s + %s, images in %s", len(records), questions, annotations, folder)
    return records


# --- VizWiz and TextVQA ---------------------------------------------------------------------------------

def load_vizwiz(path: str, rows: list, limit: Optional[int] = None, images: Optional[str] = None) -> list[Record]:
    """VizWiz annotations (a list of questions); the id is ``question_id`` if present, else the image name
    without its extension."""
    rows = rows if limit is None else rows[:limit]
    anchor = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    first = rows[0].get("image") if rows and isinstance(rows[0], dict) else None
    folder = images or pick_folder(
        [os.path.join(anchor, stem), os.path.join(anchor, os.pardir, stem), os.path.join(anchor, "images"), anchor],
        lambda f: isinstance(first, str) and os.path.isfile(os.path.join(f, first)))
    records = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(f"{where(path, i)}: a JSON {type(row).__name__}, not an object (fix the file)")
        name = row.get("image")
        if not isinstance(name, str) or not name:
            raise missing(path, i, row.get("question_id"), "image", "every VizWiz question names its image file")
        rid = row["question_id"] if row.get("question_id") is not None else os.path.splitext(name)[0]
        question = question_of(row, i, path, rid)
        answers = answers_of(row, i, path, rid, annotators=True)
        image = image_file(name, folder, where(path, i, rid), f"name the image folder with vizwiz:{path},images=FOLDER")
        records.append(Record(rid, image, question, answers, extra_of(row, ("question_id", "question", "answers"))))
    check_unique_ids(records, path)
    logger.info("read %d VizWiz records from %s, images in %s", len(records), path, folder)
    return records


def load_textvqa(path: str, data: dict, limit: Optional[int] = None, images: Optional[str] = None) -> list[Record]:
    """TextVQA annotations ``{"data": [...]}``; images ``{image_id}.jpg``."""
    rows = data["data"] if limit is None else data["data"][:limit]
    anchor = os.path.dirname(os.path.abspath(path))
    sub = "test_images" if data.get("dataset_type") == "test" else "train_images"
    first = rows[0].get("image_id") if rows and isinstance(rows[0], dict) else None
    folder = images or pick_folder(
        [os.path.join(anchor, sub), os.path.join(anchor, os.pardir, sub), os.path.join(anchor, "images"), anchor],
        lambda f: first is not None and os.path.isfile(os.path.join(f, f"{first}.jpg")))
    records = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(f"{where(path, i)}: a JSON {type(row).__name__}, not an object (fix the file)")
        rid = record_id(row, i, path, ("question_id",))
        question = question_of(row, i, path, rid)
        answers = answers_of(row, i, path, rid, annotators=True)
        if row.get("image_id") is None:
            raise missing(path, i, rid, "image_id", "every TextVQA question names its image as image_id")
        image = image_file(f"{row['image_id']}.jpg", folder, where(path, i, rid),
                           f"name the image folder with textvqa:{path},images=FOLDER")
        records.append(Record(rid, image, question, answers, extra_of(row, ("question_id", "question", "answers"))))
    check_unique_ids(records, path)
    logger.info("read %d TextVQA records from %s, images in %s", len(records), path, folder)
    return records
