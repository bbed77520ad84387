"""The one record type every reader produces, and the demonstration a backbone reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from PIL import Image

from ..images import ImageLike


@dataclass
class Record:
    """A visual question: ``image`` is a path or a PIL image; ``answers`` lists every accepted
    (or annotated) answer, the first being the one used in a demonstration."""

    id: Union[int, str]
    image: Union[str, Image.Image]
    question: str
    answers: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        return self.answers[0]


@dataclass(frozen=True)
class Demo:
    """One image-text demonstration (``image`` may be None for text-only use)."""

    image: Optional[ImageLike]
    question: str
    answer: str
