"""Loading images as RGB, with errors that name the file.

What is done to every image (docs/datasets.md says it too):
- 16-bit and 32-bit grayscale (``I;16``, ``I``) and float (``F``) images are scaled to 8 bits from
  their type's range (not clipped at 255, which turns a 16-bit scan white);
- images with transparency (RGBA, LA, and palette images with a transparent colour) are composited
  on a white background, so fully transparent pixels are white whatever colour they hide;
- anything else goes through Pillow's ``convert("RGB")``.
Paths must name regular files: folders, pipes and devices are refused, and URLs are not fetched.
"""
from __future__ import annotations

import os
import stat
import warnings
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

ImageLike = Union[str, os.PathLike, Image.Image]
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(im: Image.Image) -> Image.Image:
    """An RGB copy of ``im``: high bit depths scaled to 8 bits, transparency composited on white."""
    if im.mode == "RGB":
        return im.copy()
    if im.mode in SIXTEEN_BIT or im.mode in ("I", "F"):
        values = np.asarray(im, dtype=np.float64)
        peak = values.max(initial=0)
        if im.mode == "F":  # floats: [0, 1] or [0, 255]
            top = 1.0 if peak <= 1.0 else 255.0
        else:  # 16-bit types; 32-bit "I" holds 16-bit PNGs on some Pillow versions, 8-bit values on others
            top = 65535.0 if im.mode in SIXTEEN_BIT or peak > 255 else 255.0
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(image: ImageLike) -> Image.Image:
    """Return an RGB PIL image from a path or an image; raise ImageError naming the file."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    path = os.fspath(image)
    if path.startswith(("http://", "https://", "ftp://", "s3://", "gs://")):
        raise ImageError(f"image {path} is a URL: aim reads local files only (nothing is downloaded); download "
                         "the images and point the dataset at the files")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path} (check the path, or the dataset's image folder)") from None
    except OSError as err:
        raise ImageError(f"cannot read image {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, socket or device)"
        raise ImageError(f"image {path} is {kind}: give the path of an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"image {path} is too large to load safely ({err}); resize it, or raise "
                         "PIL.Image.MAX_IMAGE_PIXELS if you trust it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(
            f"cannot read image {path}: {err.__class__.__name__}: {err} "
            "(the file is corrupt or not an image; re-download it or drop the record)"
        ) from None
