"""What an ``aim icl-eval`` run is asked to do: ``IclEvalConfig``, the parsing of its
comma-separated options, and the choice of metric for a dataset's records."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..api import SELECT
from ..data.record import Record
from ..errors import AimError
from ..prompting import METHODS
from ..vectors.config import VECTOR_METHODS
from .tasks import METRICS, SCORING, TASKS

#: every method a run can name: the prompt methods, and vector methods (the zero-shot prompt with
#: vectors attached, ``--vectors FOLDER``)
EVAL_METHODS = METHODS + VECTOR_METHODS


def shows_demos(method: str) -> bool:
    """Whether a method puts demonstrations in the prompt (raw, text, fused): zero and the vector
    methods answer the query alone."""
    return method not in ("zero",) + VECTOR_METHODS



@dataclass
class IclEvalConfig:
    """What an evaluation runs. ``dataset`` and ``pool`` are the specs the records came from
    (recorded, and compared when a run is resumed)."""

    dataset: str
    methods: tuple = METHODS
    shots: tuple = (0, 4, 8, 16)
    select: str = "random"
    seeds: tuple = (0, 1, 2)
    limit: Optional[int] = None
    pool: Optional[str] = None
    pool_limit: Optional[int] = None
    batch_size: int = 8
    max_new_tokens: int = 10
    metric: str = "auto"
    task: str = "auto"
    scoring: str = "generate"
    num_beams: int = 1
    length_penalty: float = 1.0

    def __post_init__(self):
        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in EVAL_METHODS]
        if unknown or not self.methods:
            raise AimError(f"unknown method(s) {', '.join(map(repr, unknown)) or '(none given)'}: "
                           f"use some of {', '.join(EVAL_METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise AimError(f"methods repeat: {', '.join(self.methods)}")
        if not self.shots or any(int(k) < 0 for k in self.shots):
            raise AimError(f"shots must be counts >= 0; got {list(self.shots)}")
        self.shots = tuple(sorted(set(int(k) for k in self.shots)))
        if not self.seeds:
            raise AimError("give at least one seed")
        self.seeds = tuple(dict.fromkeys(int(s) for s in self.seeds))
        if self.select not in SELECT:
            raise AimError(f"unknown selection {self.select!r}: use one of {', '.join(SELECT)}")
        if self.metric not in METRICS:
            raise AimError(f"unknown metric {self.metric!r}: use one of {', '.join(METRICS)}")
        if self.task not in TASKS:
            raise AimError(f"unknown task {self.task!r}: use one of {', '.join(TASKS)}")
        if self.scoring not in SCORING:
            raise AimError(f"unknown scoring {self.scoring!r}: use {' or '.join(SCORING)}")
        if self.num_beams < 1:
            raise AimError(f"--num-beams must be 1 (greedy) or more; got {self.num_beams}")
        if self.batch_size <= 0 or self.max_new_tokens <= 0:
            raise AimError(f"batch size and max new tokens must be positive; got {self.batch_size}, "
                           f"{self.max_new_tokens}")


def list_items(text: str, expected: str, what: str = "") -> list[str]:
    """The stripped items of a comma-separated option; an empty one (``zero,,text``) is an error."""
    items = [item.strip() for item in text.split(",")]
    if "" in items:
        raise AimError(f"{what + ' ' if what else ''}{text!r} has an empty item: give {expected}")
    return items


def parse_methods(text: str) -> tuple:
    """``"zero,raw"`` -> ("zero", "raw"), or an AimError naming the unknown ones."""
    methods = tuple(list_items(text, f"a comma-separated list of {', '.join(EVAL_METHODS)}, e.g. zero,fused"))
    unknown = [m for m in methods if m not in EVAL_METHODS]
    if unknown or not methods:
        raise AimError(f"unknown method(s) {', '.join(map(repr, unknown)) or '(none given)'}: use a comma-separated "
                       f"list of {', '.join(EVAL_METHODS)}")
    return methods


def parse_ints(text: str, what: str) -> tuple:
    """``"0,4,8"`` -> (0, 4, 8), or an AimError naming ``what``."""
    items = list_items(text, "comma-separated integers, e.g. 0,4,8", what)
    try:
        values = tuple(int(v) for v in items)
    except ValueError:
        raise AimError(f"{what} must be comma-separated integers, e.g. 0,4,8; got {text!r}") from None
    if not values:
        raise AimError(f"{what}: give at least one integer")
    return values


def is_episode(record: Record) -> bool:
    return bool(record.extra.get("episode"))
