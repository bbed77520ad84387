"""Fashion-MNIST from Debian's dataset-fashion-mnist (IDX files, gzip) as records."""
from __future__ import annotations

import gzip
import os
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import AimError
from .record import Record

FOLDER = os.environ.get("AIM_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
#: class index -> accepted names (the first is the caption word)
CLASSES = [
    ["t-shirt", "t shirt", "tshirt", "top", "t-shirt/top"],
    ["trousers", "trouser", "pants", "pair of trousers"],
    ["pullover", "sweater", "jumper"],
    ["dress"],
    ["coat", "jacket"],
    ["sandal", "sandals"],
    ["shirt"],
    ["sneaker", "sneakers", "shoe", "trainer"],
    ["bag", "handbag", "purse"],
    ["ankle boot", "boot", "ankle boots", "boots"],
]
QUESTION = "What is shown in the image?"


def _read_idx(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise AimError(f"Fashion-MNIST file {path} not found: apt-get install dataset-fashion-mnist "
                       "(or set AIM_FASHION_MNIST to a folder with the four IDX .gz files)")
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_arrays(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,))."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise AimError(f"fashion-mnist has splits train and test, not {split!r}")
    return (_read_idx(os.path.join(FOLDER, f"{prefix}-images-idx3-ubyte.gz")),
            _read_idx(os.path.join(FOLDER, f"{prefix}-labels-idx1-ubyte.gz")))


def load_fashion_mnist(split: str = "test", limit: Optional[int] = None) -> list[Record]:
    """Classification as VQA: "What is shown in the image?" with the class names as answers, and
    the ten class names (``extra["classes"]``, the first name of each) for rank classification."""
    images, labels = load_arrays(split)
    n = len(labels) if limit is None else min(limit, len(labels))
    names = [c[0] for c in CLASSES]
    return [Record(f"{split}-{i}", Image.fromarray(images[i]).convert("RGB"), QUESTION,
                   list(CLASSES[int(labels[i])]), {"label": int(labels[i]), "classes": names}) for i in range(n)]
