"""Loading images with errors that name the file."""
from __future__ import annotations

import os
from typing import Union

from PIL import Image, UnidentifiedImageError

from .errors import ImageError

ImageLike = Union[str, os.PathLike, Image.Image]


def load_image(image: ImageLike) -> Image.Image:
    """Return an RGB PIL image from a path or an image; raise ImageError naming the file."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = os.fspath(image)
    if not os.path.exists(path):
        raise ImageError(f"image file not found: {path} (check the path, or the dataset's image folder)")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(
            f"cannot read image {path}: {err.__class__.__name__}: {err} "
            "(the file is corrupt or not an image; re-download it or drop the record)"
        ) from err
