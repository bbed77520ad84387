"""What the file readers share: reading the fields of one row (a dict) into a Record, with errors
that name the file, the record (index and id) and the fix."""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from ..errors import DatasetError, ImageError
from .record import Record

ID_FIELDS = ("question_id", "id")
NEEDED = "every record needs question_id, question, answers and image"


def where(source: str, index: int, record_id: Any = None) -> str:
    """``file, record 3 (id 42)``: how errors point at a record."""
    return f"{source}, record {index}" + ("" if record_id is None else f" (id {record_id!r})")


def missing(source: str, index: int, record_id: Any, field: str, fix: str = "") -> DatasetError:
    fix = fix or f"{NEEDED}; add the field or rename yours to {field!r}"
    return DatasetError(f"{where(source, index, record_id)}: no {field!r} field ({fix})")


def record_id(row: dict, index: int, source: str, names: Sequence[str] = ID_FIELDS) -> Union[int, str]:
    """The first of ``names`` the row has, as stored (int or str)."""
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise missing(source, index, None, names[0], f"{NEEDED}; add {' or '.join(names)} to each record")


def question_of(row: dict, index: int, source: str, rid: Any) -> str:
    question = row.get("question")
    if question is None:
        raise missing(source, index, rid, "question")
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where(source, index, rid)}: its 'question' is {question!r}; a question must be "
                           "non-empty text (fix the record or drop it)")
    return question


def answer_texts(value: Any, index: int, source: str, rid: Any) -> list[str]:
    """Answers as strings from a string, a list of strings (or numbers), or VQAv2-style dicts
    ``{"answer": ..., "answer_confidence": ..., "answer_id": ...}``."""
    items = [value] if isinstance(value, (str, int, float, dict)) else value
    texts = []
    try:
        for item in items:
            text = item.get("answer") if isinstance(item, dict) else item
            if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                raise TypeError(repr(item)[:60])
            texts.append(str(text))
    except TypeError as err:
        raise DatasetError(f"{where(source, index, rid)}: answers must be a string, a list of strings or a list "
                           f"of {{\"answer\": ...}} dicts, got {err} (fix the field)") from None
    if not texts:
        raise DatasetError(f"{where(source, index, rid)}: the answers list is empty (give at least one answer, "
                           "or drop the record)")
    return texts


def demo_first(answers: list[str], preferred: Optional[str] = None) -> list[str]:
    """The annotators' answers reordered, never dropped or added, so that the one a demonstration
    shows comes first: ``preferred`` (e.g. VQAv2's multiple_choice_answer) when it is among them
    (ignoring case and outer spaces), else the most common answer (the earliest on a tie)."""
    def key(a: str) -> str:
        return a.strip().lower()

    pick = None
    if preferred is not None:
        pick = next((i for i, a in enumerate(answers) if a == preferred), None)
        if pick is None:
            pick = next((i for i, a in enumerate(answers) if key(a) == key(str(preferred))), None)
    if pick is None:
        counts = Counter(key(a) for a in answers)
        top = max(counts.values())
        pick = next(i for i, a in enumerate(answers) if counts[key(a)] == top)
    return [answers[pick]] + answers[:pick] + answers[pick + 1:]


def answers_of(row: dict, index: int, source: str, rid: Any, annotators: bool,
               preferred: Optional[str] = None) -> list[str]:
    """``answers`` (or a single ``answer``) of a row. ``annotators``: the list is a set of human
    answers in no meaningful order, so put the demonstration answer first (``demo_first``);
    otherwise the file's order is kept (its first answer is the demonstration answer)."""
    value = row.get("answers")
    if value is None:
        value = row.get("answer")
    if value is None:
        raise missing(source, index, rid, "answers",
                      f"{NEEDED}; add 'answers' (a list) or 'answer' (a string); a split without answers, "
                      "such as a test split, cannot be read")
    texts = answer_texts(value, index, source, rid)
    return demo_first(texts, preferred) if annotators else texts


def outside_paths_allowed() -> bool:
    """Whether image paths may leave the dataset's folder: ``AIM_ALLOW_OUTSIDE_PATHS=1`` (the CLI's
    ``aim --allow-outside-paths ...`` sets it)."""
    return os.environ.get("AIM_ALLOW_OUTSIDE_PATHS", "") not in ("", "0")


def inside_folder(name: str, folder: str, label: str) -> str:
    """``name`` resolved relative to ``folder``. Absolute paths and paths that climb out of ``folder``
    (``..``) are refused unless outside paths are allowed; symbolic links inside it are followed."""
    path = os.path.abspath(os.path.normpath(name if os.path.isabs(name) else os.path.join(folder, name)))
    inside = os.path.abspath(os.path.normpath(folder))
    if not outside_paths_allowed() and os.path.commonpath([path, inside]) != inside:
        raise ImageError(f"{label}: image path {name!r} points outside the dataset's folder {inside}: image paths "
                         "are read relative to it; move the images there, or allow such paths with "
                         "`aim --allow-outside-paths ...` (AIM_ALLOW_OUTSIDE_PATHS=1 in Python)")
    return path


def image_file(name: str, folder: str, label: str, fix: str) -> str:
    """``name``, relative to ``folder`` (see ``inside_folder``), as a path to an existing file."""
    path = inside_folder(name, folder, label)
    if not os.path.isfile(path):
        raise ImageError(f"{label}: image file {path} not found ({fix})")
    return path


def pick_folder(candidates: Iterable[str], holds_first_image: Callable[[str], bool]) -> str:
    """The first existing candidate folder that holds the first record's image; failing that the
    first existing one (errors then name it), failing that the first candidate."""
    candidates = list(dict.fromkeys(os.path.normpath(c) for c in candidates))
    existing = [c for c in candidates if os.path.isdir(c)]
    for folder in existing:
        if holds_first_image(folder):
            return folder
    return existing[0] if existing else candidates[0]


def check_unique_ids(records: Sequence[Record], source: str) -> None:
    """Ids must be unique as strings (a demo bank keys demonstrations by ``str(id)``)."""
    seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        key = str(rec.id)
        if key in seen:
            raise DatasetError(f"{source}: records {seen[key]} and {i} share the id {rec.id!r} (ids must be unique; "
                               "remove the duplicate or give it its own id)")
        seen[key] = i


def extra_of(row: dict, used: Iterable[str]) -> dict[str, Any]:
    """The row's other fields, kept on the record."""
    used = set(used)
    return {k: v for k, v in row.items() if k not in used}
