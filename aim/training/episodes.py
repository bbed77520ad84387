"""Interleaved training sequences for the pocket backbone's second stage, from training splits only.

Three kinds of example, drawn per step from a generator seeded by (seed, step):
- ``binding``: 2-5 Fashion-MNIST classes bound to made-up words from the *training* word pool,
  up to ``max_shots`` demonstrations "<image> Question: What is this? Answer: <word>", then a query
  image of one of the classes; the target is its word. Only the sequence says which word is which.
- ``vqa``: 0-8 easy-VQA train questions with their images and answers, then a query question.
- ``caption``: one image and an instruction; the target is its caption (stage 1's task, kept so
  captioning survives).
Images are indices into one feature table (the frozen vision tower runs once, up front).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..data import easy_vqa, fashion_mnist
from ..data.binding import QUESTION as BINDING_QUESTION
from ..data.binding import made_up_words
from .connector import INSTRUCTIONS


@dataclass
class Example:
    """Demonstrations (image index, question, answer), then a query (image index, text) and its
    target. ``kind`` "caption" puts the instruction as the query text, with no question template."""

    kind: str
    demos: list = field(default_factory=list)
    image: int = 0
    question: str = ""
    target: str = ""


class EpisodePool:
    """Images, labels and QA pairs of the training splits, and the sampler of examples."""

    def __init__(self, fashion_per_class: int = 600, easy_vqa_images: int = 3000, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images: list[Image.Image] = []
        arrays, labels = fashion_mnist.load_arrays("train")
        self.by_class: list[list[int]] = []
        for c in range(len(fashion_mnist.CLASSES)):
            rows = rng.choice(np.flatnonzero(labels == c), size=fashion_per_class, replace=False)
            self.by_class.append(list(range(len(self.images), len(self.images) + len(rows))))
            self.images += [Image.fromarray(arrays[i]).convert("RGB") for i in rows]
        scenes = easy_vqa.scene_captions("train")
        paths = easy_vqa.image_paths("train")
        chosen = sorted(scenes)
        chosen = [chosen[i] for i in rng.permutation(len(chosen))[:easy_vqa_images]]
        where = {}
        for img in chosen:
            where[img] = len(self.images)
            self.images.append(Image.open(paths[img]).convert("RGB"))
        self.captions = {}
        for c, rows in enumerate(self.by_class):
            name = fashion_mnist.CLASSES[c][0]
            for r in rows:
                self.captions[r] = f"{'An' if name[0] in 'aeiou' else 'A'} {name}."
        for img, (color, shape) in scenes.items():
            if img in where:
                self.captions[where[img]] = f"A {color} {shape}."
        self.qa = [(where[r.extra["image_id"]], r.question, r.answer) for r in easy_vqa.load_easy_vqa("train")
                   if r.extra["image_id"] in where]
        self.words = made_up_words("train")
        self.caption_rows = sorted(self.captions)

    def sample(self, rng: np.random.Generator, caption_fraction: float, vqa_fraction: float,
               max_shots: int) -> Example:
        u = rng.random()
        if u < caption_fraction:
            row = int(rng.choice(self.caption_rows))
            return Example("caption", [], row, INSTRUCTIONS[int(rng.integers(len(INSTRUCTIONS)))],
                           self.captions[row])
        if u < caption_fraction + vqa_fraction:
            picks = rng.choice(len(self.qa), size=int(rng.integers(0, 9)) + 1, replace=False)
            demos = [self.qa[i] for i in picks[:-1]]
            image, question, answer = self.qa[picks[-1]]
            return Example("vqa", demos, image, question, answer)
        ways = int(rng.integers(2, min(5, max_shots) + 1))  # 2-5 classes, never more than the shots
        shots = int(rng.integers(ways, max_shots + 1))
        classes = rng.choice(len(self.by_class), size=ways, replace=False)
        words = [str(w) for w in rng.choice(self.words, size=ways, replace=False)]
        labels = list(range(ways)) + [int(j) for j in rng.integers(0, ways, size=shots - ways)]
        labels = [labels[i] for i in rng.permutation(shots)]
        query = int(rng.integers(ways))
        used: set[int] = set()

        def draw(j: int) -> int:
            while True:
                row = int(rng.choice(self.by_class[int(classes[j])]))
                if row not in used:
                    used.add(row)
                    return row

        demos = [(draw(j), BINDING_QUESTION, words[j]) for j in labels]
        return Example("binding", demos, draw(query), BINDING_QUESTION, words[query])
