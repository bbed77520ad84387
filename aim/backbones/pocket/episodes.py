"""The pocket backbone's training data, from training splits only: captions (stage 1) and the varied
interleaved episodes of its second stage, which also serve ``aim train fuser`` by default.

Four kinds of example, drawn per step from a generator seeded by (seed, step):
- ``binding``: 2-5 classes of one training image set (``TRAINING_MIX``: Fashion-MNIST, procedural
  textures, easy-VQA shapes and colours, sample-photo crops, openclipart categories) bound to words
  of a training vocabulary (consonant-vowel words, real words, numbers, two-word labels; training
  pools), 1 to ``max_shots`` demonstrations drawn balanced, at random (the query's class may be
  rare) or with the query's class once; one of 16 question wordings and one of four answer forms per
  episode; a colour or scale change of the whole episode now and then. Only the sequence says which
  word is which.
- ``names``: the same image sets with their real class names; demonstrations at random, so the
  query's class is often not among them and the answer comes from what the model knows.
- ``vqa``: 0-8 easy-VQA train questions with their images and answers, then a query question.
- ``caption``: 0-4 captioned images (other scenes), then an image to caption, so demonstrations are
  not copied.
Held out of all of it, for evaluation (aim/data/binding.py): the image sets emoji, digits and
silhouettes, the ordinary-looking made-up words (``pseudo``), the test word pools, the held-out
question wordings and every test split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps

from ...data import easy_vqa
from ...data.binding import TRAIN_QUESTIONS
from ...data.captions import CAPTION_PROMPT, fashion_caption, scene_caption
from ...data.image_sets import load_image_set
from ...data.vocab import label_words
from ...errors import AimError
from ...training.sequences import TrainSequence
from ..base import Demo
from .config import TRAINING_MIX, VOCABULARIES

#: the captioning instructions of stage 1 (and of stage 2's caption examples)
INSTRUCTIONS = [
    "Describe the image briefly.",
    "Write a short caption for this image.",
    "What does this picture show?",
    "Give a brief description of the image.",
    "Name what you see in this picture.",
    "Caption this image.",
]
#: sets whose class names read as answers (``names`` examples) and captions (``caption`` examples)
NAMED_SETS = ("fashion-mnist", "patterns", "easy-vqa-shapes", "easy-vqa-colors", "photos")
CAPTIONED_SETS = ("fashion-mnist", "patterns", "easy-vqa-scenes")
DRAWS = {"balanced": 0.4, "random": 0.4, "rare": 0.2}
ANSWER_FORMS = ("{}", "{}", "{}", "It is {}.", "This is a {}.", "{}.")
KINDS = ("binding", "names", "vqa", "caption")


@dataclass
class Example:
    """Demonstrations (image, question, answer), then a query (image, text) and its target. ``kind``
    "caption" puts the instruction as the query text, with no question template."""

    kind: str
    demos: list = field(default_factory=list)
    image: Optional[Image.Image] = None
    question: str = ""
    target: str = ""
    templated: bool = True  # False: the instruction alone after the image (stage 1's caption layout)


def parse_shares(text: str, defaults: dict, what: str) -> dict:
    """``"a,b"`` or ``"a:0.5,b:2"`` -> {name: share}: a name alone keeps its share in ``defaults``;
    shares are relative (they need not add up to 1). Unknown names and bad numbers are refused."""
    shares = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, share = item.partition(":")
        if name not in defaults:
            raise AimError(f"{what} {name!r}: use some of {', '.join(defaults)} (as NAME or NAME:SHARE)")
        try:
            shares[name] = float(share) if share else defaults[name]
        except ValueError:
            raise AimError(f"{what} {item!r}: the share after ':' must be a number, e.g. {name}:0.3") from None
        if shares[name] <= 0:
            raise AimError(f"{what} {item!r}: a share must be above 0 (leave the name out instead)")
    if not shares:
        raise AimError(f"no {what}: give at least one of {', '.join(defaults)}")
    return shares


def _fractions(shares: dict) -> dict:
    """Relative shares -> fractions that add up to 1."""
    total = sum(shares.values())
    return {name: share / total for name, share in shares.items()}


def _weighted(rng: np.random.Generator, table: dict) -> str:
    keys = list(table)
    p = np.asarray([table[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _shots(rng: np.random.Generator, low: int, high: int) -> int:
    """A count in [low, high], skewed towards the low end (long prompts cost the most)."""
    return low + int((high - low + 1) * rng.random() ** 1.5)


def episode_transform(rng: np.random.Generator) -> Callable[[Image.Image], Image.Image]:
    """A change applied to every image of an episode (a new look for a known domain): colour
    channels swapped, grey, inverted, tinted, or the content shrunk onto a plain background."""
    kind = int(rng.integers(5))
    order = [int(i) for i in rng.permutation(3)]
    tint = rng.uniform(0.4, 1.0, size=3)
    scale = rng.uniform(0.45, 0.8)
    back = tuple(int(v) for v in rng.integers(0, 256, size=3))

    def apply(im: Image.Image) -> Image.Image:
        if kind == 0:
            return Image.merge("RGB", [im.split()[i] for i in order])
        if kind == 1:
            return ImageOps.grayscale(im).convert("RGB")
        if kind == 2:
            return ImageOps.invert(im)
        if kind == 3:
            arr = np.asarray(im, dtype=np.float32) * tint
            return Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        w, h = im.size
        small = im.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.BICUBIC)
        canvas = Image.new("RGB", (w, h), back)
        canvas.paste(small, ((w - small.size[0]) // 2, (h - small.size[1]) // 2))
        return canvas

    return apply


class EpisodeSampler:
    """The image sets, vocabularies and QA pairs of the training splits, and the sampler of examples.
    ``sets``: the training image sets to use (default all of ``TRAINING_MIX``; tests pass fewer), as
    names (their shares in ``TRAINING_MIX``) or a ``"name:share,..."`` string; ``vocabularies``
    likewise against ``VOCABULARIES``."""

    def __init__(self, sets=None, easy_vqa_images: int = 3000, seed: int = 0, vocabularies: str = ""):
        if not isinstance(sets, str):
            sets = ",".join(sets or TRAINING_MIX)
        self.mix = _fractions(parse_shares(sets, TRAINING_MIX, "training image set"))
        self.vocabularies = _fractions(parse_shares(vocabularies or ",".join(VOCABULARIES), VOCABULARIES,
                                                    "vocabulary"))
        self.sets = {name: load_image_set(name, "train") for name in self.mix}
        self.words = {kind: label_words(kind, "train") for kind in self.vocabularies}
        rng = np.random.default_rng(seed)
        scenes, paths = easy_vqa.scene_captions("train"), easy_vqa.image_paths("train")
        chosen = sorted(scenes)
        chosen = [chosen[i] for i in rng.permutation(len(chosen))[:easy_vqa_images]]
        self.scene_paths = {img: paths[img] for img in chosen}
        self.scene_captions = {img: scene_caption(*scenes[img]) for img in chosen}
        self.qa = [(r.extra["image_id"], r.question, r.answer) for r in easy_vqa.load_easy_vqa("train")
                   if r.extra["image_id"] in self.scene_paths]
        self._scenes: dict = {}

    def description(self) -> str:
        def shares(table: dict) -> str:
            return ", ".join(f"{k} {v:.0%}" for k, v in table.items())

        return (f"binding on {shares(self.mix)} (training splits), vocabularies {shares(self.vocabularies)} "
                f"(training pools), {len(TRAIN_QUESTIONS)} question wordings, {len(set(ANSWER_FORMS))} answer forms, "
                f"draws {', '.join(DRAWS)}; class names; easy-VQA question runs; caption runs")

    # images -------------------------------------------------------------------------------------
    def image(self, name: str, row: int) -> Image.Image:
        return Image.fromarray(self.sets[name].images[row]).convert("RGB")

    def scene(self, img: int) -> Image.Image:
        if img not in self._scenes:
            with Image.open(self.scene_paths[img]) as im:
                self._scenes[img] = im.convert("RGB")
        return self._scenes[img]

    # examples -----------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, mix: dict, max_shots: int) -> Example:
        """One example; ``mix``: kind -> share (of ``KINDS``)."""
        kind = _weighted(rng, mix)
        return getattr(self, f"_{kind}")(rng, max_shots)

    def _binding(self, rng: np.random.Generator, max_shots: int) -> Example:
        name = _weighted(rng, self.mix)
        data = self.sets[name]
        counts = np.bincount(data.labels)
        eligible = np.flatnonzero(counts > max_shots)
        ways = int(rng.integers(2, max(2, min(5, len(eligible), max_shots)) + 1))
        classes = [int(c) for c in rng.choice(eligible, size=ways, replace=False)]
        vocab = _weighted(rng, self.vocabularies)
        words = [str(w) for w in rng.choice(self.words[vocab], size=ways, replace=False)]
        draw = _weighted(rng, DRAWS)
        query = int(rng.integers(ways))
        if draw == "balanced":
            shots = _shots(rng, ways, max(ways, max_shots))
            labels = list(range(ways)) + [int(j) for j in rng.integers(0, ways, size=shots - ways)]
        elif draw == "rare":
            shots = _shots(rng, ways, max(ways, max_shots))
            others = [j for j in range(ways) if j != query]
            labels = [query] + [others[int(j)] for j in rng.integers(0, len(others), size=shots - 1)]
        else:  # each class drawn alone; the query's class at least once, or the answer is unknowable
            shots = _shots(rng, 1, max_shots)
            labels = [int(j) for j in rng.integers(0, ways, size=shots)]
            if query not in labels:
                labels[int(rng.integers(shots))] = query
        labels = [labels[i] for i in rng.permutation(len(labels))]
        picks = {j: iter(rng.choice(data.rows_of(classes[j]), size=labels.count(j) + (j == query), replace=False))
                 for j in range(ways)}
        change = episode_transform(rng) if rng.random() < 0.3 else (lambda im: im)
        question = TRAIN_QUESTIONS[int(rng.integers(len(TRAIN_QUESTIONS)))]
        form = ANSWER_FORMS[int(rng.integers(len(ANSWER_FORMS)))]
        demos = [(change(self.image(name, int(next(picks[j])))), question, form.format(words[j])) for j in labels]
        return Example("binding", demos, change(self.image(name, int(next(picks[query])))), question,
                       form.format(words[query]))

    def _names(self, rng: np.random.Generator, max_shots: int) -> Example:
        named = [s for s in NAMED_SETS if s in self.sets]
        if not named:
            return self._binding(rng, max_shots)
        name = named[int(rng.integers(len(named)))]
        data = self.sets[name]
        rows = rng.choice(len(data.labels), size=int(rng.integers(0, min(8, max_shots) + 1)) + 1, replace=False)
        question = TRAIN_QUESTIONS[int(rng.integers(len(TRAIN_QUESTIONS)))]
        demos = [(self.image(name, int(r)), question, data.classes[int(data.labels[r])]) for r in rows[:-1]]
        return Example("names", demos, self.image(name, int(rows[-1])), question,
                       data.classes[int(data.labels[rows[-1]])])

    def _vqa(self, rng: np.random.Generator, max_shots: int) -> Example:
        picks = rng.choice(len(self.qa), size=int(rng.integers(0, min(8, max_shots) + 1)) + 1, replace=False)
        demos = [(self.scene(self.qa[i][0]), self.qa[i][1], self.qa[i][2]) for i in picks[:-1]]
        img, question, answer = self.qa[picks[-1]]
        return Example("vqa", demos, self.scene(img), question, answer)

    def _captioned(self, rng: np.random.Generator) -> tuple[Image.Image, str]:
        source = CAPTIONED_SETS[int(rng.integers(len(CAPTIONED_SETS)))]
        if source == "easy-vqa-scenes" or source not in self.sets:
            img = list(self.scene_paths)[int(rng.integers(len(self.scene_paths)))]
            return self.scene(img), self.scene_captions[img]
        data = self.sets[source]
        row = int(rng.integers(len(data.labels)))
        cls = data.classes[int(data.labels[row])]
        text = fashion_caption(cls) if source == "fashion-mnist" else f"A pattern of {cls}."
        return self.image(source, row), text

    def _caption(self, rng: np.random.Generator, max_shots: int) -> Example:
        instruction = ([CAPTION_PROMPT] + INSTRUCTIONS)[int(rng.integers(len(INSTRUCTIONS) + 1))]
        demos = [(*self._captioned(rng),) for _ in range(int(rng.integers(0, min(4, max_shots) + 1)))]
        image, caption = self._captioned(rng)
        templated = bool(demos) or rng.random() < 0.5  # alone, half in stage 1's layout
        return Example("caption", [(im, instruction, text) for im, text in demos], image, instruction, caption,
                       templated)


class FuserEpisodes:
    """The pocket's episodes as training sequences for ``aim train fuser``: label binding, class names
    and easy-VQA question runs (no captions), 1 to ``max_shots`` demonstrations."""

    mix = {"binding": 0.65, "names": 0.1, "vqa": 0.25}

    def __init__(self, seed: int, max_shots: int, sets: Optional[Sequence[str]] = None):
        self.sampler = EpisodeSampler(sets, seed=seed)
        self.max_shots = max_shots
        self.description = (f"pocket episodes ({', '.join(f'{k} {v:.0%}' for k, v in self.mix.items())}): "
                            f"{self.sampler.description()}; 0-{max_shots} demonstrations")

    def sample(self, rng: np.random.Generator) -> TrainSequence:
        ex = self.sampler.sample(rng, self.mix, self.max_shots)
        return TrainSequence([Demo(im, q, a) for im, q, a in ex.demos], ex.image, ex.question, ex.target)
