"""Crops of the sample photos that scikit-image and scikit-learn ship, as a labelled image set: each
photo is a class, and its images are random square crops of it (a quarter to two thirds of its
shorter side, flipped at random), so telling classes apart means matching a view to its photo.
The split seeds the crops: ``train`` and ``test`` hold different crops of the same photos."""
from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

from .image_sets import package_dir

#: class name -> (package, file inside its data folder)
PHOTOS = {
    "astronaut": ("skimage", "astronaut.png"), "brick wall": ("skimage", "brick.png"),
    "cameraman": ("skimage", "camera.png"), "cat": ("skimage", "chelsea.png"),
    "clock": ("skimage", "clock_motion.png"), "coffee": ("skimage", "coffee.png"),
    "coins": ("skimage", "coins.png"), "colour wheel": ("skimage", "color.png"),
    "grass": ("skimage", "grass.png"), "gravel": ("skimage", "gravel.png"), "horse": ("skimage", "horse.png"),
    "galaxies": ("skimage", "hubble_deep_field.jpg"), "stained tissue": ("skimage", "ihc.png"),
    "moon": ("skimage", "moon.png"), "printed page": ("skimage", "page.png"), "retina": ("skimage", "retina.jpg"),
    "rocket": ("skimage", "rocket.jpg"), "cells": ("skimage", "cell.png"),
    "motorcycle": ("skimage", "motorcycle_left.png"), "chinese temple": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
}
SIZE = 96
PER_CLASS = {"train": 60, "test": 20}
SEEDS = {"train": 11, "test": 12}
_FOLDERS = {"skimage": ("skimage", "data", "pip install scikit-image"),
            "sklearn": ("sklearn", os.path.join("datasets", "images"), "pip install scikit-learn")}


def _photo(package: str, name: str) -> Image.Image:
    module, sub, install = _FOLDERS[package]
    path = os.path.join(package_dir(module, install), sub, name)
    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            back = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(back, im).convert("RGB")
        return im.convert("RGB")


@functools.lru_cache(maxsize=2)
def load_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray, list]:
    """(crops (N, 96, 96, 3) uint8, labels (N,), class names); seeded, the same on every machine."""
    rng = np.random.default_rng(SEEDS[split])
    images, labels = [], []
    for cls, (package, name) in enumerate(PHOTOS.values()):
        photo = _photo(package, name)
        w, h = photo.size
        for _ in range(PER_CLASS[split]):
            side = int(min(w, h) * rng.uniform(0.25, 0.67))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = photo.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.BICUBIC)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            images.append(np.asarray(crop))
            labels.append(cls)
    return np.stack(images), np.asarray(labels, dtype=np.int64), list(PHOTOS)
