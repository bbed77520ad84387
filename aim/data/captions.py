"""Captioning datasets as records: the COCO captions JSON, the Karpathy split JSON (COCO,
Flickr30k), and caption rows of lmms-eval's parquet files (``flickr30k``: ``image``, ``caption``
(a list), ``img_id``; ``coco2017_cap_val``: ``question``, ``answer`` (a list), ``id``).

A caption record asks :data:`CAPTION_PROMPT` (lmms-eval's prompt for both tasks) and holds every
reference caption as ``answers`` (the first is the one a demonstration shows); ``extra["task"]``
is ``"caption"``, so ``aim icl-eval`` scores it with CIDEr.

- COCO: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``
  (``captions_val2014.json``); one record per image that has captions, images in
  ``<json folder>/<data split named in the file name>`` (``val2014``), ``../val2014``, ``images`` or
  the JSON's folder.
- Karpathy: ``{"dataset": "coco"|"flickr30k", "images": [{"filename", "filepath", "split",
  "sentences": [{"raw"}], "cocoid"|"imgid"}]}`` (``dataset_coco.json``, ``dataset_flickr30k.json``);
  ``PATH:SPLIT`` keeps one split (``test``, ``val``, ``train``, ``restval``), images in
  ``<json folder>/<filepath>/<filename>``, ``<json folder>/images`` or the JSON's folder.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any, Optional

from .fields import DatasetError, check_unique_ids, image_file, pick_folder, where
from .record import Record

logger = logging.getLogger(__name__)

#: what a captioning query asks (lmms-eval's flickr30k and coco_cap prompt)
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."
TASK = {"task": "caption"}


def fashion_caption(class_name: str) -> str:
    """A Fashion-MNIST item's caption: "A sneaker.", "An ankle boot." """
    return f"{'An' if class_name[0] in 'aeiou' else 'A'} {class_name}."


def scene_caption(color: str, shape: str) -> str:
    """An easy-VQA scene's caption: "A blue circle." """
    return f"A {color} {shape}."


def builtin_captions(name: str, split: str, limit: Optional[int] = None) -> list[Record]:
    """``easy-vqa-captions``: one record per scene of the split, its caption read off the split's
    own questions; ``fashion-mnist-captions``: one per image. One reference caption each."""
    if name == "easy-vqa-captions":
        from .easy_vqa import image_paths, scene_captions

        scenes, paths = scene_captions(split), image_paths(split)
        rows = [(f"{split}-scene-{img}", paths[img], scene_caption(*scenes[img])) for img in sorted(scenes)]
        rows = rows if limit is None else rows[:limit]
    else:
        from PIL import Image

        from .fashion_mnist import CLASSES, load_arrays

        images, labels = load_arrays(split)
        n = len(labels) if limit is None else min(limit, len(labels))  # only the images asked for are converted
        rows = [(f"{split}-{i}", Image.fromarray(images[i]).convert("RGB"), fashion_caption(CLASSES[int(labels[i])][0]))
                for i in range(n)]
    return [caption_record(rid, image, [caption], rid) for rid, image, caption in rows]


def is_coco_captions(data: Any) -> bool:
    anns = data.get("annotations") if isinstance(data, dict) else None
    return (isinstance(anns, list) and isinstance(data.get("images"), list) and bool(anns)
            and isinstance(anns[0], dict) and "caption" in anns[0])


def is_karpathy(data: Any) -> bool:
    images = data.get("images") if isinstance(data, dict) else None
    return (isinstance(images, list) and bool(images) and isinstance(images[0], dict)
            and "sentences" in images[0] and "annotations" not in data)


def caption_record(rid: Any, image: Any, captions: list, label: str, extra: Optional[dict] = None) -> Record:
    texts = [c.strip() for c in captions if isinstance(c, str) and c.strip()]
    if not texts:
        raise DatasetError(f"{label}: no captions (a captioning record needs at least one non-empty reference "
                           "caption; drop the image or fix the file)")
    return Record(rid, image, CAPTION_PROMPT, texts, {**(extra or {}), **TASK})


def load_coco_captions(path: str, data: dict, limit: Optional[int] = None,
                       images: Optional[str] = None) -> list[Record]:
    """One record per image of a COCO captions file, its captions in the file's order."""
    by_image: dict[Any, list[str]] = defaultdict(list)
    for j, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise DatasetError(f"{where(path, j)}: a COCO caption annotation needs image_id and caption (fix the "
                               "file)")
        by_image[ann["image_id"]].append(ann["caption"])
    rows = [im for im in data["images"] if isinstance(im, dict) and im.get("id") in by_image]
    if not rows:
        raise DatasetError(f"{path}: no image of \"images\" has a caption in \"annotations\" (a captioning file "
                           "without captions; use the captions_*.json of the split)")
    rows = rows if limit is None else rows[:limit]
    anchor = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    split = stem.split("_")[-1]  # captions_val2014 -> val2014
    first = rows[0].get("file_name")
    folder = images or pick_folder([os.path.join(anchor, split), os.path.join(anchor, os.pardir, split),
                                    os.path.join(anchor, "images"), anchor],
                                   lambda f: isinstance(first, str) and os.path.isfile(os.path.join(f, first)))
    records = []
    for i, im in enumerate(rows):
        label = where(path, i, im["id"])
        if not isinstance(im.get("file_name"), str):
            raise DatasetError(f"{label}: no 'file_name' for the image (fix the file)")
        image = image_file(im["file_name"], folder, label, f"name the image folder with {path},images=FOLDER")
        records.append(caption_record(im["id"], image, by_image[im["id"]], label, {"file_name": im["file_name"]}))
    check_unique_ids(records, path)
    logger.info("read %d captioned images from %s, images in %s", len(records), path, folder)
    return records


def load_karpathy(path: str, data: dict, split: Optional[str] = None, limit: Optional[int] = None,
                  images: Optional[str] = None) -> list[Record]:
    """The images of one split (all when ``split`` is None) of a Karpathy split file."""
    rows = [im for im in data["images"] if isinstance(im, dict)]
    splits = sorted({str(im.get("split")) for im in rows})
    if split is not None:
        rows = [im for im in rows if im.get("split") == split]
        if not rows:
            raise DatasetError(f"{path} has no split {split!r} (its splits: {', '.join(splits)}; use {path}:SPLIT)")
    rows = rows if limit is None else rows[:limit]
    anchor = os.path.dirname(os.path.abspath(path))
    first = rows[0] if rows else {}
    folder = images or pick_folder(
        [os.path.join(anchor, str(first.get("filepath", ""))), os.path.join(anchor, "images"), anchor],
        lambda f: isinstance(first.get("filename"), str) and os.path.isfile(os.path.join(f, first["filename"])))
    records = []
    for i, im in enumerate(rows):
        rid = im.get("cocoid", im.get("imgid", im.get("filename")))
        label = where(path, i, rid)
        name = im.get("filename")
        if not isinstance(name, str):
            raise DatasetError(f"{label}: no 'filename' for the image (fix the file)")
        sub = os.path.join(anchor, im["filepath"]) if im.get("filepath") and not images else folder
        image = image_file(name, sub if os.path.isdir(sub) else folder, label,
                           f"name the image folder with {path},images=FOLDER")
        captions = [s.get("raw") for s in im.get("sentences") or [] if isinstance(s, dict)]
        records.append(caption_record(rid, image, captions, label, {"split": im.get("split"), "file_name": name}))
    check_unique_ids(records, path)
    logger.info("read %d captioned images (%s split %s) from %s", len(records), data.get("dataset", "?"),
                split or "all", path)
    return records


def caption_row(row: dict, at: str) -> Optional[dict]:
    """An lmms-eval caption row in the fields every reader takes (question, answers, question_id),
    or None when the row is not one: flickr30k's ``caption`` list without a question, or a
    ``question`` equal to the caption prompt with an ``answer`` list (coco2017_cap_val). ``at``
    (the record, for errors) is unused: a caption row is read as it comes."""
    if "question" not in row and isinstance(row.get("caption"), (list, str)):
        rid = row.get("img_id", row.get("id", row.get("filename")))
        captions = row["caption"] if isinstance(row["caption"], list) else [row["caption"]]
        rest = {k: v for k, v in row.items() if k not in ("caption", "img_id", "id")}
        return {**rest, "question_id": rid, "question": CAPTION_PROMPT, "answers": captions, **TASK}
    if row.get("question") == CAPTION_PROMPT and isinstance(row.get("answer"), list):
        return {**row, **TASK}
    return None
