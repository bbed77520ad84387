"""``aim.FewShot``: few-shot prompting of any supported MLLM with fused demonstrations.

    fs = aim.FewShot.from_pretrained("pocket", fuser="identity")
    fs.compress(aim.load_records("easy-vqa:train", 2000), "banks/easy-vqa")   # or fs.open_bank(folder)
    answers = fs.generate([image], ["what shape is this?"], shots=16, select="image")
    fs.use_vectors("runs/live")                      # from `aim train vectors`
    answers = fs.generate([image], ["what shape is this?"], method="live")

A thin face over the pieces: backbone (reads and answers), fuser (fused tokens), DemoBank (disk),
KeyIndex (FAISS retrieval over the bank's keys) and prompt assembly. One id space: the index's ids
are bank positions, and ``demo_ids`` turns them into the bank's demo ids.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .backbones import load_backbone
from .backbones.base import Backbone, Demo
from .bank import DemoBank
from .compress import compress_demos
from .data.record import Record
from .errors import AimError
from .fusion import Fuser, load_fuser
from .images import ImageLike, load_image
from .locking import FolderLock
from .prompting import assemble
from .retrieval import KeyIndex, TextEmbedder, hybrid_keys, select_demos

logger = logging.getLogger(__name__)

SELECT = ("random", "image", "text", "hybrid")
#: the bank keys each selection reads (random draws from the image index's ids)
SELECT_KEYS = {"random": ("image",), "image": ("image",), "text": ("text",), "hybrid": ("image", "text")}


@dataclass
class Answer:
    """One answer with what it cost and which demonstrations it saw (prompt order)."""

    text: str
    prompt_tokens: int
    demo_ids: list


class FewShot:
    """Backbone + fuser + (optionally) a demo bank."""

    def __init__(self, backbone: Backbone, fuser: Fuser, bank: Optional[DemoBank] = None, index_kind: str = "auto"):
        """``index_kind``: the FAISS index over the bank's keys (aim.retrieval.INDEX_KINDS): ``auto``
        (exact below 50,000 keys, IVF above), or ``flat``, ``ivf``, ``ivfpq`` (pools too large for
        memory: its candidates are re-ranked by the bank's exact keys, read row by row), ``hnsw``."""
        from .retrieval import INDEX_KINDS

        if index_kind not in INDEX_KINDS:
            raise AimError(f"index kind {index_kind!r}: use one of {', '.join(INDEX_KINDS)}")
        self.backbone, self.fuser, self.bank = backbone, fuser, bank
        self.index_kind = index_kind
        #: demonstration records known in memory, by id: raw prompts show their images even where the
        #: bank keeps only a hash of an in-memory image (``compress`` fills it)
        self.records: dict[str, Record] = {}
        self._indexes: dict[str, KeyIndex] = {}
        self._text: Optional[TextEmbedder] = None
        #: vector method -> its module (``use_vectors``): answers with ``method=`` that name
        self.vectors: dict = {}

    def use_vectors(self, folder: str):
        """Load a vector folder (``aim train vectors``) made for this backbone; ``generate(method=...)``
        with its method name then answers the query alone with the vectors attached."""
        from .vectors import load_vectors

        module = load_vectors(folder, self.backbone)
        self.vectors[module.config.method] = module
        return module

    @classmethod
    def from_pretrained(cls, backbone: str = "pocket", fuser: Optional[str] = None, bank: Optional[str] = None,
                        **load_options) -> "FewShot":
        """Load a backbone by name / folder / hub id, a fuser folder (or ``identity``), and a bank."""
        bb = load_backbone(backbone, **load_options)
        fs = cls(bb, load_fuser(fuser, bb))
        if bank is not None:
            fs.open_bank(bank)
        return fs

    # ------------------------------------------------------------------ banks
    def open_bank(self, folder: str) -> DemoBank:
        """Open a bank made with this backbone and fuser (anything else is a clear error)."""
        self.bank = DemoBank.open(folder, backbone=self.backbone.fingerprint(layer=self.fuser.config.layer),
                                  fuser=self.fuser.fingerprint())
        self._indexes.clear()
        return self.bank

    def compress(self, demos: Sequence[Record], out: str, **options) -> DemoBank:
        """Fuse demonstrations into a bank at ``out`` (created or resumed) and use it."""
        compress_demos(self.backbone, self.fuser, demos, out, **options)
        self.records.update((str(r.id), r) for r in demos)
        return self.open_bank(out)

    def index(self, kind: str) -> KeyIndex:
        """The FAISS index over the bank's keys of one kind (ids: bank positions), saved in the bank
        folder and listed in its manifest; rebuilt when the bank grew since. With several processes,
        let one build it first (the others then read the file)."""
        if kind not in self._indexes:
            path, index = self.bank.index_path(kind), None
            if path is not None:
                index = KeyIndex.load(path)
                if not np.array_equal(index.ids, np.arange(len(self.bank))):
                    logger.info("%s does not cover the bank's %d demonstrations: rebuilding it", path, len(self.bank))
                    index = None
                elif self.index_kind != "auto" and index.kind != self.index_kind:
                    logger.info("%s is a %s index, %s is asked for: rebuilding it", path, index.kind, self.index_kind)
                    index = None
            if index is None:
                # read a chunk of keys at a time: a pool of millions never holds every key in memory
                index = KeyIndex.build_from(len(self.bank), self._exact_keys(kind), kind=self.index_kind)
                name = f"index.{kind}.faiss"
                with FolderLock(self.bank.folder, "bank"):  # the manifest is the bank's: one writer
                    index.save(os.path.join(self.bank.folder, name))
                    self.bank.record_index(kind, name, len(index))
            if index.kind == "ivfpq":
                index.exact_keys = self._exact_keys(kind)
            self._indexes[kind] = index
        return self._indexes[kind]

    def _exact_keys(self, kind: str):
        """Bank positions -> their exact keys of ``kind`` (hybrid: built from the image and text rows)."""
        bank = self.bank
        if kind == "hybrid":
            return lambda rows: hybrid_keys(bank.key_rows("image", rows), bank.key_rows("text", rows))
        return lambda rows: bank.key_rows(kind, rows)

    def select_index(self, select: str) -> KeyIndex:
        """The index a selection reads (random draws from the image index's ids)."""
        return self.index("image" if select == "random" else select)

    def _query_keys(self, kind: str, images: Sequence[ImageLike], questions: Sequence[str]) -> np.ndarray:
        image = text = None
        if kind in ("image", "hybrid"):
            image = self.backbone.image_features(images).numpy()
        if kind in ("text", "hybrid"):
            self._text = self._text or TextEmbedder()
            text = self._text(list(questions)).numpy()
        return image if kind == "image" else text if kind == "text" else hybrid_keys(image, text)

    def demo_ids(self, images: Sequence[ImageLike], questions: Sequence[str], shots: int, select: str = "image",
                 seed: int = 0, exclude: Optional[Sequence] = None,
                 query_numbers: Optional[Sequence[int]] = None) -> list[list[str]]:
        """Bank ids of ``shots`` demonstrations per query, most similar last (random: seeded).
        ``exclude``: one id per query never to return (the query itself when it sits in the pool);
        ``query_numbers``: a stable number per query (its place in the dataset), so that a random
        draw does not depend on how queries are batched."""
        if self.bank is None:
            raise AimError("no demo bank: call compress(...) or open_bank(folder) first")
        if select not in SELECT:
            raise AimError(f"unknown selection {select!r}: use one of {', '.join(SELECT)}")
        ids = self.bank.ids()
        position = {d: i for i, d in enumerate(ids)}
        excl = [[position[str(e)]] if str(e) in position else [] for e in exclude] if exclude else None
        kind = "image" if select == "random" else select
        index = self.select_index(select)
        keys = self._query_keys(kind, images, questions) if select != "random" else np.zeros((len(images), index.dim),
                                                                                            dtype=np.float32)
        rows = select_demos(index, keys, shots, "random" if select == "random" else "similar", seed=seed,
                            exclude_ids=excl, query_numbers=query_numbers)
        return [[ids[r] for r in row] for row in rows]

    # ------------------------------------------------------------------ answering
    def generate(self, images: Sequence[ImageLike], questions: Sequence[str], shots: int = 16,
                 select: str = "image", method: str = "fused", seed: int = 0, max_new_tokens: int = 10,
                 exclude: Optional[Sequence] = None, num_beams: int = 1,
                 length_penalty: float = 1.0) -> list[Answer]:
        """Answer each (image, question) with ``shots`` demonstrations from the bank. ``method``:
        fused (the bank's fused tokens), raw (the demonstrations' images and texts), text, zero, or a
        vector method (``live``: the query alone with the vectors of ``use_vectors``; no bank needed).
        Greedy decoding, or beam search with ``num_beams`` > 1 (``Backbone.beam_search``)."""
        from .vectors.config import VECTOR_METHODS

        images = [load_image(i) for i in images]
        if method in VECTOR_METHODS:
            if method not in self.vectors:
                raise AimError(f"method {method!r} needs its vectors: call use_vectors(folder) first (a folder from "
                               f"`aim train vectors --method {method}`)")
            batch = assemble(self.backbone, "zero", images, questions)
            with self.vectors[method].attached(self.backbone):
                gens = self.backbone.generate(batch, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                              length_penalty=length_penalty)
            return [Answer(g.text, g.prompt_tokens, []) for g in gens]
        chosen = self.demo_ids(images, questions, shots, select, seed, exclude) if shots and method != "zero" \
            else [[] for _ in questions]
        demos, fused = self.prompt_demos(chosen, method)
        batch = assemble(self.backbone, method, images, questions, demos=demos, fused=fused)
        gens = self.backbone.generate(batch, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                      length_penalty=length_penalty)
        return [Answer(g.text, g.prompt_tokens, row) for g, row in zip(gens, chosen)]

    def prompt_demos(self, chosen: Sequence[Sequence[str]], method: str) -> tuple:
        """Bank ids per query -> (Demos, fused tokens) as ``aim.prompting.assemble`` takes them for
        ``method``: fused tokens for ``fused``, Demos (with images for ``raw``) otherwise."""
        if method == "fused":
            return None, [[self.bank.fused(i) for i in row] for row in chosen]
        return [[self.demo(i, with_image=method == "raw") for i in row] for row in chosen], None

    def demo(self, demo_id: str, with_image: bool) -> Demo:
        """A bank demonstration as a ``Demo`` for raw (``with_image``) or text-only prompts."""
        record = self.records.get(str(demo_id))
        if record is not None:
            return Demo(load_image(record.image) if with_image else None, record.question, record.answer)
        meta = self.bank.meta(demo_id)
        image = None
        if with_image:
            if meta["image"].startswith("sha256:"):
                raise AimError(f"demo {demo_id}: the bank keeps only a hash of its in-memory image, so raw ICL "
                               "cannot show it; build the bank from files")
            image = load_image(meta["image"])
        return Demo(image, meta["question"], meta["answers"][0])
