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


BINDING_KEYS = ("words", "pool", "question", "draw", "shots")


def _binding(spec: str, name: str, source: str, split: str, limit: Optional[int]) -> list[Record]:
    """``SOURCE-binding-<N>way[+key=value ...]:SPLIT``: label-binding episodes (aim/data/binding.py).
    Keys: ``words`` (vocabulary kind), ``pool`` (train or test word pool; default: train on the train
    split, else test), ``question`` (a wording, or held-out / train), ``draw`` (balanced, random,
    rare), ``shots`` (the most demonstrations a query can take, default 16)."""
    from .binding import binding_records

    head, *pairs = name.split("+")
    ways = head[len(f"{source}-binding-"):-len("way")] if head.endswith("way") else ""
    if not ways.isdigit():
        raise AimError(f"unknown dataset {spec!r}: write {source}-binding-<N>way:<split>, e.g. "
                       f"{source}-binding-2way:test (options: +words=pseudo+draw=random+question=held-out)")
    options = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if key not in BINDING_KEYS or not eq or not value:
            raise AimError(f"dataset {spec!r}: option {pair!r}: write key=value with a key of "
                           f"{', '.join(BINDING_KEYS)}")
        options[key] = value
    if "shots" in options:
        if not options["shots"].isdigit():
            raise AimError(f"dataset {spec!r}: shots={options['shots']} is not a number")
        options["max_shots"] = int(options.pop("shots"))
    # train-split episodes draw from the training word pool; any other split from the held-out one
    pool = options.pop("pool", "train" if split == "train" else "test")
    vocab = options.pop("words", "cv")
    return binding_records(split, int(ways), n=limit or 200, words=pool, source=source, vocab=vocab, **options)


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
    from .binding import SOURCES

    source = next((s for s in SOURCES if name.startswith(f"{s}-binding-")), None)
    if source:
        return _binding(spec, name, source, split, limit)
    if name == "fashion-mnist":
        from .fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(split, limit)
    from .detect import FORMATS, load_path

    fmt = name if name in FORMATS and ":" in spec else None  # a folder named vqa is a path
    return load_path(spec.partition(":")[2] if fmt else spec, fmt, limit, spec,
                     also=f", or a built-in: {', '.join(BUILTIN)}")
