"""Procedural texture images: an image domain no shipped checkpoint was trained on.

Ten classes of coloured patterns drawn with numpy (64x64 RGB): horizontal, vertical and diagonal
stripes, a checkerboard, dots, concentric rings, a grid of thin lines, waves, speckle noise and a
gradient. Each image draws its own colours, scale, phase and offset, so images of a class differ
while the classes stay apart. Used to check that a fuser trained on Fashion-MNIST and easy-VQA
episodes carries images from a domain it never saw (label binding, ``patterns-binding-{N}way``).
The split only seeds the drawing: ``test`` and ``train`` hold different images.
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import AimError

CLASSES = ("horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard", "dots", "rings",
           "grid", "waves", "speckle", "gradient")
SIZE = 64
PER_CLASS = 200
SEEDS = {"train": 1, "test": 2}


def _pattern(cls: int, rng: np.random.Generator) -> np.ndarray:
    """A (SIZE, SIZE) mask in [0, 1] of class ``cls``."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    period = rng.uniform(6, 16)
    phase = rng.uniform(0, period)
    cy, cx = rng.uniform(16, 48, size=2)
    if cls == 0:
        return ((y + phase) % period < period / 2).astype(np.float32)
    if cls == 1:
        return ((x + phase) % period < period / 2).astype(np.float32)
    if cls == 2:
        return ((x + y + phase) % period < period / 2).astype(np.float32)
    if cls == 3:
        return (((x + phase) // (period / 2) + (y + phase) // (period / 2)) % 2).astype(np.float32)
    if cls == 4:
        dy, dx = (y + phase) % period - period / 2, (x + phase) % period - period / 2
        return (dy ** 2 + dx ** 2 < (period / 4) ** 2).astype(np.float32)
    if cls == 5:
        return (np.hypot(y - cy, x - cx) % period < period / 2).astype(np.float32)
    if cls == 6:
        return (((y + phase) % period < 1.5) | ((x + phase) % period < 1.5)).astype(np.float32)
    if cls == 7:
        return (np.sin(2 * np.pi * (y + 4 * np.sin(2 * np.pi * x / (2 * period))) / period + phase) > 0).astype(np.float32)
    if cls == 8:
        return (rng.random((SIZE, SIZE)) < 0.5).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (x - SIZE / 2) * np.cos(angle) + (y - SIZE / 2) * np.sin(angle)
    return (ramp - ramp.min()) / (ramp.max() - ramp.min())


@functools.lru_cache(maxsize=2)
def load_arrays(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 64, 64, 3) uint8, labels (N,) int64), PER_CLASS images per class, class-major."""
    if split not in SEEDS:
        raise AimError(f"patterns split {split!r}: use train or test")
    rng = np.random.default_rng(SEEDS[split])
    images, labels = [], []
    for cls in range(len(CLASSES)):
        for _ in range(PER_CLASS):
            mask = _pattern(cls, rng)[..., None]
            fg, bg = rng.integers(0, 256, size=(2, 3))
            while np.abs(fg.astype(int) - bg).sum() < 200:  # keep the pattern visible
                fg = rng.integers(0, 256, size=3)
            images.append((mask * fg + (1 - mask) * bg).astype(np.uint8))
            labels.append(cls)
    return np.stack(images), np.asarray(labels, dtype=np.int64)
