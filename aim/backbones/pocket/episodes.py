"""The pocket backbone's training data, from training splits only: captions (stage 1) and the
interleaved sequences of its second stage, which also serve ``aim train fuser`` by default.

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

from ...data import easy_vqa, fashion_mnist
from ...data.captions import fashion_caption, scene_caption
from ...data.binding import QUESTION as BINDING_QUESTION
from ...data.binding import made_up_words
from ...training.sequences import TrainSequence
from ..base import Demo

#: the captioning instructions of stage 1 (and of stage 2's caption examples)
INSTRUCTIONS = [
    "Describe the image briefly.",
    "Write a short caption for this image.",
    "What does this picture show?",
    "Give a brief description of the image.",
    "Name what you see in this picture.",
    "Caption this image.",
]


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
            for r in rows:
                self.captions[r] = fashion_caption(fashion_mnist.CLASSES[c][0])
        for img, (color, shape) in scenes.items():
            if img in where:
                self.captions[where[img]] = scene_caption(color, shape)
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


class FuserEpisodes:
    """The pocket's episodes as training sequences for ``aim train fuser``: label binding and
    easy-VQA question runs (no captions), 1 to ``max_shots`` demonstrations."""

    vqa_fraction = 0.25  # the rest is label binding; the shipped fuser was trained on this mix

    def __init__(self, seed: int, max_shots: int):
        self.pool = EpisodePool(seed=seed)
        self.max_shots = max_shots
        self.description = ("pocket episodes: Fashion-MNIST train label binding with made-up words of the training "
                            f"pool ({1 - self.vqa_fraction:.0%}) and easy-VQA train question runs "
                            f"({self.vqa_fraction:.0%}), 1-{max_shots} demonstrations")

    def sample(self, rng: np.random.Generator):
        ex = self.pool.sample(rng, 0.0, self.vqa_fraction, self.max_shots)
        img = self.pool.images
        return TrainSequence([Demo(img[i], q, a) for i, q, a in ex.demos], img[ex.image], ex.question, ex.target)
