"""Lazy package namespaces (as transformers' ``_LazyModule``): a package's public names are imported
from their modules on first use, so ``import aim`` and ``aim --help`` load no torch, transformers or
FAISS until something needs them."""
from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``__getattr__`` and ``__dir__`` for a package whose names live in submodules:
    ``exports`` maps a public name to the module (relative to ``package``) that defines it."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
