"""Dataset files and folders as specs: ``[FORMAT:]PATH[:SPLIT][,images=FOLDER]`` or
``[vqa:]questions=Q.json,annotations=A.json[,images=FOLDER]``; the format is told from the path
when not given. See docs/datasets.md."""
from __future__ import annotations

import glob
import os
from typing import Optional

from .fields import DatasetError
from .record import Record

#: format prefix -> what it reads
FORMATS = {
    "jsonl": "a JSONL file, one {question_id, image, question, answers} object a line",
    "vqa": "the official VQA questions + annotations JSON pair (VQAv2, OK-VQA) and COCO images",
    "json": "a COCO captions JSON, a Karpathy split JSON (PATH:SPLIT) or one of the VQA JSON files, told apart",
    "vizwiz": "a VizWiz annotations JSON (a list of questions) and its image folder",
    "textvqa": "a TextVQA JSON ({\"data\": [...]}) and its image folder",
    "hf": "a Hugging Face datasets folder (save_to_disk), lmms-eval field names",
    "parquet": "a parquet file or folder, lmms-eval field names",
}
OPTIONS = ("questions", "annotations", "images", "split")


def parse_location(text: str) -> tuple[Optional[str], dict[str, str]]:
    """``PATH[:SPLIT][,key=value...]`` -> (PATH or None, {key: value}); a path that exists as
    written is taken whole."""
    if os.path.exists(text):
        return text, {}
    path, options = None, {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if eq and key.strip() in OPTIONS:
            options[key.strip()] = value.strip()
        elif path is None:
            path = part
        else:
            raise DatasetError(f"dataset {text!r}: cannot read {part!r} (write PATH[:SPLIT][,images=FOLDER] or "
                               "questions=Q.json,annotations=A.json,images=FOLDER)")
    if path and not os.path.exists(path) and ":" in path:
        head, _, split = path.rpartition(":")
        if os.path.exists(head):
            path, options = head, {"split": split, **options}
    return path, options


def detect_format(path: str) -> Optional[str]:
    """The format of an existing file or folder, or None."""
    if os.path.isdir(path):
        from .hf import is_hf_folder

        if is_hf_folder(path):
            return "hf"
        if glob.glob(os.path.join(path, "*questions*.json")):
            return "vqa"
        if glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True):
            return "parquet"
        return None
    ext = os.path.splitext(path)[1].lower()
    return {".jsonl": "jsonl", ".parquet": "parquet", ".json": "json"}.get(ext)


def load_path(text: str, fmt: Optional[str] = None, limit: Optional[int] = None, spec: Optional[str] = None,
              also: str = "") -> list[Record]:
    """Records of a dataset file or folder given as ``text`` (see the module docstring); ``fmt``
    forces a format; ``spec`` and ``also`` are for the error when nothing is there."""
    path, options = parse_location(text)
    split, images = options.get("split"), options.get("images")
    spec = spec or text
    if "questions" in options or "annotations" in options:
        if fmt not in (None, "vqa") or path or not {"questions", "annotations"} <= set(options):
            raise DatasetError(f"dataset {spec!r}: questions= and annotations= go together, without a path "
                               "(vqa:questions=Q.json,annotations=A.json,images=FOLDER)")
        from .vqa_json import load_vqa_pair

        for key in ("questions", "annotations"):
            _exists(options[key], spec, f"the {key} file")
        return load_vqa_pair(options["questions"], options["annotations"], images, limit)
    if not path or not os.path.exists(path):
        raise DatasetError(f"unknown dataset {spec!r}: no file or folder {path or text or '(none given)'} (give a dataset file or "
                           f"folder, FORMAT:PATH with FORMAT one of {', '.join(FORMATS)}{also}; see docs/datasets.md)")
    if images:
        _exists(images, spec, "the image folder")
    kind = fmt or detect_format(path)
    if kind in ("hf", "parquet"):
        from .hf import load_hf_folder, load_parquet

        if images:
            raise DatasetError(f"dataset {spec!r}: images= is for JSON and JSONL datasets; {kind} datasets "
                               "carry their images (drop images=)")
        return (load_hf_folder if kind == "hf" else load_parquet)(path, split, limit)
    if split and not os.path.isdir(path) and kind != "json":
        raise DatasetError(f"dataset {spec!r}: ':{split}' picks a split of a folder; {path} is a file "
                           "(drop the split)")
    if kind == "jsonl":
        from .jsonl import load_jsonl

        return load_jsonl(path, limit, images)
    if kind == "vqa" and os.path.isdir(path):
        from .vqa_json import load_vqa_pair, pair_in_folder

        return load_vqa_pair(*pair_in_folder(path, split), images, limit)
    if kind in ("json", "vqa", "vizwiz", "textvqa") and os.path.isfile(path):
        from .vqa_json import load_json_file

        return load_json_file(path, limit, images, None if kind == "json" else kind, split)
    what = f"a {kind} dataset" if kind else "a dataset"
    raise DatasetError(f"{path}: unknown dataset format, or not {what} (expected a .jsonl or .json file, a parquet "
                       "file or folder, a datasets folder (save_to_disk) or a folder with *questions*.json; "
                       f"name the format with FORMAT:PATH, FORMAT one of {', '.join(FORMATS)}; see docs/datasets.md)")


def _exists(path: str, spec: str, what: str) -> None:
    if not os.path.exists(path):
        raise DatasetError(f"dataset {spec!r}: {what} {path} does not exist (fix the path)")
