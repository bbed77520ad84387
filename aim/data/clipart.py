"""openclipart drawings (Debian's ``openclipart-png``, public domain) as a labelled image set: each
leaf category folder with at least ``MIN_PER_CLASS`` distinct drawings is a class ("food fruit",
"animals birds", ...). Drawings are composited on white and fitted into 96x96; exact repeats (the
same drawing at another size) are kept once, by a 16x16 average hash. A seeded three quarters of
each class is ``train``, the rest ``test``. The decoded set is cached under $AIM_CACHE."""
from __future__ import annotations

import functools
import os
import warnings

import numpy as np
from PIL import Image

from ..cache import cache_dir
from ..errors import AimError

FOLDER = os.environ.get("AIM_OPENCLIPART", "/usr/share/openclipart/png")
SKIP = ("computer/icons", "special", "unsorted", "shapes/stars", "logos")
MIN_PER_CLASS = 8
MAX_PIXELS = 16_000_000  # a few drawings are ~170 megapixels: skipped rather than decoded
SIZE = 96


def _fit(path: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS or min(im.size) < 16:
                return None
            im = im.convert("RGBA")
    im.thumbnail((SIZE, SIZE), Image.LANCZOS)
    canvas = Image.new("RGBA", (SIZE, SIZE), (255, 255, 255, 255))
    canvas.alpha_composite(im, ((SIZE - im.size[0]) // 2, (SIZE - im.size[1]) // 2))
    return np.asarray(canvas.convert("RGB"))


def _hash(image: np.ndarray) -> bytes:
    small = np.asarray(Image.fromarray(image).convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float32)
    return np.packbits(small > small.mean()).tobytes()


def _build() -> tuple[np.ndarray, np.ndarray, list]:
    from tqdm.auto import tqdm

    if not os.path.isdir(FOLDER):
        raise AimError(f"openclipart drawings not found at {FOLDER}: apt-get install openclipart-png (root), or set "
                       "AIM_OPENCLIPART to its png folder")
    leaves = {}
    for root, _, files in os.walk(FOLDER):
        rel = os.path.relpath(root, FOLDER)
        pngs = sorted(f for f in files if f.lower().endswith(".png"))
        if pngs and not any(rel == s or rel.startswith(s + "/") for s in SKIP):
            leaves[rel] = [os.path.join(root, f) for f in pngs]
    images, labels, names = [], [], []
    for rel in tqdm(sorted(leaves), desc="openclipart", unit="folder"):
        seen, kept = set(), []
        for path in leaves[rel]:
            try:
                image = _fit(path)
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
            if image is None or _hash(image) in seen:
                continue
            seen.add(_hash(image))
            kept.append(image)
        if len(kept) >= MIN_PER_CLASS:
            images += kept
            labels += [len(names)] * len(kept)
            names.append(rel.replace("/", " ").replace("_", " "))
    return np.stack(images), np.asarray(labels, dtype=np.int64), names


def _all() -> tuple[np.ndarray, np.ndarray, list]:
    path = os.path.join(cache_dir(), "image_sets", "openclipart.npz")
    if not os.path.isfile(path):
        images, labels, names = _build()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            np.savez(f, images=images, labels=labels, names=np.asarray(names))
        os.replace(path + ".tmp", path)
    with np.load(path, allow_pickle=False) as data:  # nothing unpickles: arrays of numbers and str
        return data["images"], data["labels"], [str(n) for n in data["names"]]


@functools.lru_cache(maxsize=2)
def load_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray, list]:
    """(drawings (N, 96, 96, 3) uint8, labels (N,), class names) of ``split``."""
    images, labels, names = _all()
    rng = np.random.default_rng(5)
    keep = []
    for c in range(len(names)):
        rows = rng.permutation(np.flatnonzero(labels == c))
        cut = int(round(len(rows) * 0.75))
        keep.append(rows[:cut] if split == "train" else rows[cut:])
    rows = np.sort(np.concatenate(keep))
    return images[rows], labels[rows], names
