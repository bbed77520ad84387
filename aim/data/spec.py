"""Dataset specs as the CLI takes them: built-in names such as ``easy-vqa:test``."""
from __future__ import annotations

from typing import Optional

from ..errors import AimError
from .record import Record

BUILTIN = ("easy-vqa:train", "easy-vqa:test", "fashion-mnist:train", "fashion-mnist:test")


def load_records(spec: str, limit: Optional[int] = None) -> list[Record]:
    """Records of a dataset spec (a built-in ``name:split``)."""
    name, _, split = spec.partition(":")
    split = split or "test"
    if name == "easy-vqa":
        from .easy_vqa import load_easy_vqa

        return load_easy_vqa(split, limit)
    if name == "fashion-mnist":
        from .fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(split, limit)
    raise AimError(f"unknown dataset {spec!r}: use one of {', '.join(BUILTIN)}")
