"""easy-VQA (64x64 scenes of one coloured shape) from its package, and captions built from the
training questions (a scene's colour and shape)."""
from __future__ import annotations

import importlib.util
from typing import Optional

from ..errors import AimError
from .record import Record

SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")


def _package():
    if importlib.util.find_spec("easy_vqa") is None:
        raise AimError("easy-VQA is not installed: pip install --no-deps easy-vqa==1.0")
    import easy_vqa

    return easy_vqa


def load_easy_vqa(split: str = "test", limit: Optional[int] = None) -> list[Record]:
    """Questions of a split ("train" or "test") as records, in the package's order."""
    pkg = _package()
    if split == "train":
        (qs, ans, ids), paths = pkg.get_train_questions(), pkg.get_train_image_paths()
    elif split == "test":
        (qs, ans, ids), paths = pkg.get_test_questions(), pkg.get_test_image_paths()
    else:
        raise AimError(f"easy-vqa has splits train and test, not {split!r} (use easy-vqa:train or easy-vqa:test)")
    records = [Record(f"{split}-{i}", paths[img], q, [a], {"image_id": img})
               for i, (q, a, img) in enumerate(zip(qs, ans, ids))]
    return records[:limit] if limit else records


def load_yes_no(split: str = "test", limit: Optional[int] = None) -> list[Record]:
    """The split's yes/no questions as a binary classification task: classes ``no`` and ``yes``
    (``yes`` the positive class, for ROC-AUC)."""
    records = [Record(r.id, r.image, r.question, r.answers,
                      dict(r.extra, classes=["no", "yes"], positive="yes", task="classification"))
               for r in load_easy_vqa(split) if r.answer in ("yes", "no")]
    return records[:limit] if limit else records


def scene_captions(split: str = "train") -> dict[int, tuple[str, str]]:
    """image id -> (colour, shape), read off the split's own questions and answers."""
    colors: dict[int, str] = {}
    shapes: dict[int, str] = {}
    for rec in load_easy_vqa(split):
        img, q, a = rec.extra["image_id"], rec.question, rec.answer
        if a in SHAPES:
            shapes[img] = a
        if a in COLORS:
            colors[img] = a
        words = q.rstrip("?").split()
        if q.startswith("what is the ") and words[3] in COLORS:
            colors[img] = words[3]
        if q.startswith("what color is the ") and words[4] in SHAPES:
            shapes[img] = words[4]
    return {img: (colors[img], shapes[img]) for img in shapes if img in colors}


def image_paths(split: str = "train") -> dict[int, str]:
    pkg = _package()
    return pkg.get_train_image_paths() if split == "train" else pkg.get_test_image_paths()
