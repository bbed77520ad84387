"""Training sequences for a fuser: k demonstrations, then a query (image + question) and its target.

Four sources, each with ``sample(rng) -> TrainSequence`` and a ``description`` (recorded in the
checkpoint): any record dataset grouped at random (``RecordSequences``), label-binding episodes
with their own demonstrations (``EpisodeSequences``), runs of consecutive
image-text pairs of interleaved documents (``DocumentSequences``, OBELICS layout), or a backbone's
own training data (``Backbone.training_sequences``: the pocket's episodes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..data.record import Demo
from ..errors import AimError
from ..images import load_image

DOCUMENT_QUESTION = "Describe the image."  # interleaved documents: each image's following text is its answer


@dataclass
class TrainSequence:
    """``demos`` (Demo, prompt order), then the query ``image`` + ``question``; ``target`` is the answer."""

    demos: list
    image: object
    question: str
    target: str


class RecordSequences:
    """Random groups of ``min_shots`` to ``max_shots`` demonstrations and a query, drawn from records."""

    def __init__(self, spec: str, max_shots: int, limit: Optional[int] = None, min_shots: int = 1,
                 records: Optional[list] = None):
        from ..data.spec import load_records

        self.records = records if records is not None else load_records(spec, limit)
        self.min_shots, self.max_shots = min(min_shots, max_shots), max_shots
        if len(self.records) < max_shots + 1:
            raise AimError(f"{spec}: {len(self.records)} records, fewer than max_shots + 1 = {max_shots + 1} "
                           "needed for one training sequence")
        self.description = f"{spec}: random sequences of {self.min_shots}-{max_shots} demonstrations and a query"

    def sample(self, rng: np.random.Generator) -> TrainSequence:
        size = int(rng.integers(self.min_shots, self.max_shots + 1)) + 1
        picks = rng.choice(len(self.records), size=size, replace=False)
        recs = [self.records[i] for i in picks]
        demos = [Demo(load_image(r.image), r.question, r.answer) for r in recs[:-1]]
        return TrainSequence(demos, load_image(recs[-1].image), recs[-1].question, recs[-1].answer)


class EpisodeSequences:
    """Label-binding records (``aim.data.binding``), each with its own episode: a sequence is one
    record as the query and ``min_shots`` to ``max_shots`` demonstrations of its episode (its words
    bind only there), drawn as the episode says."""

    def __init__(self, spec: str, records: list, max_shots: int, min_shots: int = 1):
        self.records = records
        self.min_shots, self.max_shots = min(min_shots, max_shots), max_shots
        self.description = (f"{spec}: {len(records)} label-binding episodes, {self.min_shots}-{max_shots} of each "
                            "episode's own demonstrations and its query")

    def sample(self, rng: np.random.Generator) -> TrainSequence:
        from ..data.binding import episode_demos

        record = self.records[int(rng.integers(len(self.records)))]
        shots = int(rng.integers(self.min_shots, self.max_shots + 1))
        demos = episode_demos(record, shots, seed=int(rng.integers(2**31)))
        return TrainSequence([Demo(load_image(d.image), d.question, d.answer) for d in demos],
                             load_image(record.image), record.question, record.answer)


class DocumentSequences:
    """Windows of consecutive image-text pairs of interleaved documents; the last pair is the query."""

    def __init__(self, spec: str, max_shots: int, limit: Optional[int] = None):
        from ..data.documents import load_documents

        self.documents = load_documents(spec.removeprefix("documents:"), limit)
        self.max_shots = max_shots
        self.description = (f"{spec}: runs of up to {max_shots + 1} consecutive image-text pairs of interleaved "
                            "documents")

    def sample(self, rng: np.random.Generator) -> TrainSequence:
        doc = self.documents[int(rng.integers(len(self.documents)))]
        size = min(len(doc), int(rng.integers(2, self.max_shots + 2)))
        first = int(rng.integers(len(doc) - size + 1))
        pairs = [(load_image(img), text) for img, text in doc[first:first + size]]
        demos = [Demo(img, DOCUMENT_QUESTION, text) for img, text in pairs[:-1]]
        return TrainSequence(demos, pairs[-1][0], DOCUMENT_QUESTION, pairs[-1][1])


def sequence_source(data: Optional[str], backbone, seed: int, max_shots: int, limit: Optional[int] = None,
                    min_shots: int = 1):
    """The source ``data`` names: None (or ``FAMILY-episodes``) for the backbone's own training data,
    interleaved documents (``documents:PATH``, or a JSONL of documents), or a record dataset spec
    (``min_shots`` to ``max_shots`` demonstrations a sequence; the other sources draw their own counts)."""
    from ..data.documents import is_documents

    if data is None or data == f"{backbone.family}-episodes":
        own = backbone.training_sequences(seed, max_shots)
        if own is None:
            raise AimError(f"backbone {backbone.model_id} ({backbone.family}) brings no training sequences of its "
                           "own: pass --data (a dataset spec, or interleaved documents)")
        return own
    if data.startswith("documents:") or is_documents(data):
        return DocumentSequences(data, max_shots, limit)
    from ..data.spec import load_records

    records = load_records(data, limit)
    if records and records[0].extra.get("episode"):
        return EpisodeSequences(data, records, max_shots, min_shots)
    return RecordSequences(data, max_shots, limit, min_shots, records=records)
