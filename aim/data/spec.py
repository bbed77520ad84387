"""Dataset specs as the CLI takes them: built-in names such as ``easy-vqa:test``, or a dataset file
or folder (``[FORMAT:]PATH[:SPLIT]``, see detect.py and docs/datasets.md)."""
from __future__ import annotations

from typing import Optional

from ..errors import AimError
from .record import Record

BUILTIN = ("easy-vqa:train", "easy-vqa:test", "fashion-mnist:train", "fashion-mnist:test",
           "easy-vqa-captions:test", "fashion-mnist-captions:test", "easy-vqa-yesno:test",
           "fashion-mnist-binding-2way:test", "fashion-mnist-binding-5way:test", "patterns-binding-2way:test",
           "patterns-binding-5way:test")


def load_records(spec: str, limit: Optional[int] = None) -> list[Record]:
    """Records of a dataset spec: a built-in ``name:split``, or a file or folder of a format told
    from the path or named by a prefix (``jsonl:``, ``vqa:``, ``vizwiz:``, ``textvqa:``, ``hf:``,
    ``parquet:``); ``limit`` keeps the first N records."""
    name, _, split = spec.partition(":")
    split = split or "test"
    if name == "easy-vqa":
        from .easy_vqa import load_easy_vqa

        return load_easy_vqa(split, limit)
    if name == "easy-vqa-yesno":
        from .easy_vqa import load_yes_no

        return load_yes_no(split, limit)
    if name in ("easy-vqa-captions", "fashion-mnist-captions"):
        from .captions import builtin_captions

        return builtin_captions(name, split, limit)
    from .binding import SOURCES, binding_records

    source = next((s for s in SOURCES if name.startswith(f"{s}-binding-")), None)
    if source and name.endswith("way"):

        ways = name[len(f"{source}-binding-"):-len("way")]
        if not ways.isdigit():
            raise AimError(f"unknown dataset {spec!r}: write {source}-binding-<N>way:<split>, e.g. "
                           f"{source}-binding-2way:test")
        # train-split episodes draw from the training word pool; any other split from the held-out one
        return binding_records(split, int(ways), n=limit or 200, words="train" if split == "train" else "test",
                               source=source)
    if name == "fashion-mnist":
        from .fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(split, limit)
    from .detect import FORMATS, load_path

    fmt = name if name in FORMATS and ":" in spec else None  # a folder named vqa is a path
    return load_path(spec.partition(":")[2] if fmt else spec, fmt, limit, spec,
                     also=f", or a built-in: {', '.join(BUILTIN)}")
