"""Label-binding episodes: held-out words, balanced demonstrations that never include the query,
answers that only the demonstrations can give, and draws fixed by the seed."""
import os
from collections import Counter

import numpy as np
import pytest

from aim.data import binding
from aim.data.binding import episode_demos
from aim.data.spec import load_records
from aim.errors import AimError

pytestmark = pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist")
                                and "AIM_FASHION_MNIST" not in os.environ, reason="Fashion-MNIST not installed")


def test_word_pools_are_disjoint_made_up_words():
    train, test = binding.made_up_words("train"), binding.made_up_words("test")
    assert (len(train), len(test)) == (binding.TRAIN_WORDS, binding.TEST_WORDS)
    assert len(set(train)) == len(train) and not set(train) & set(test)
    assert all(w.isalpha() and w.islower() and len(w) in (4, 6) for w in test)
    assert binding.made_up_words("test") == test  # the same on every call (fixed seed)
    with pytest.raises(AimError, match="train or test"):
        binding.made_up_words("val")


@pytest.mark.parametrize("ways,k", [(2, 4), (2, 8), (5, 5), (5, 10), (5, 7)])
def test_episode_demos_are_balanced_and_bound_to_the_episode(ways, k):
    records = load_records(f"fashion-mnist-binding-{ways}way:test", 20)
    assert len(records) == 20 and len({r.id for r in records}) == 20
    test_words = set(binding.made_up_words("test"))
    for r in records:
        ep = r.extra["episode"]
        assert len(ep["classes"]) == len(set(ep["classes"])) == ways
        assert r.answers == [ep["words"][ep["classes"].index(r.extra["label"])]]
        assert set(ep["words"]) <= test_words
        demos = binding.episode_demos(r, k, seed=0)
        assert len(demos) == k
        counts = Counter(d.answer for d in demos)
        assert set(counts) <= set(ep["words"])
        assert max(counts.values()) - min(counts.get(w, 0) for w in ep["words"]) <= 1  # balanced
        assert all(ep["classes"][ep["words"].index(d.answer)] == d.extra["label"] for d in demos)
        query_index = int(str(r.id).split("-")[1])
        assert all(int(d.id.split("-")[1].split(":")[0]) != query_index for d in demos)


def test_seed_fixes_the_draw():
    r = load_records("fashion-mnist-binding-2way:test", 1)[0]
    same = [d.id for d in binding.episode_demos(r, 8, seed=1)], [d.id for d in binding.episode_demos(r, 8, seed=1)]
    assert same[0] == same[1]
    assert [d.id for d in binding.episode_demos(r, 8, seed=2)] != same[0]
    with pytest.raises(AimError, match="max_shots"):
        binding.episode_demos(r, 40)


def test_train_split_uses_training_words():
    r = load_records("fashion-mnist-binding-5way:train", 3)
    train_words = set(binding.made_up_words("train"))
    assert all(set(x.extra["episode"]["words"]) <= train_words for x in r)


def test_pattern_images_are_a_fixed_balanced_domain_of_their_own():
    from aim.data import patterns

    images, labels = patterns.load_arrays("test")
    assert images.shape == (10 * patterns.PER_CLASS, 64, 64, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [patterns.PER_CLASS] * 10
    train, _ = patterns.load_arrays("train")
    assert not np.array_equal(train[:5], images[:5])  # the split seeds the drawing
    patterns.load_arrays.cache_clear()
    assert np.array_equal(patterns.load_arrays("test")[0], images)  # the same on every call
    with pytest.raises(AimError, match="patterns split"):
        patterns.load_arrays("validation")


def test_patterns_binding_spec_draws_pattern_images():
    from aim.data import patterns

    records = load_records("patterns-binding-2way:test", 4)
    images, labels = patterns.load_arrays("test")
    for r in records:
        ep = r.extra["episode"]
        assert ep["source"] == "patterns" and r.id.startswith("patterns-test-")
        assert np.array_equal(np.asarray(r.image), images[ep["query"]]) and r.extra["label"] == labels[ep["query"]]
        for d in episode_demos(r, 4, seed=1):
            assert d.extra["label"] in ep["classes"] and d.answers[0] == ep["words"][ep["classes"].index(d.extra["label"])]
            index = int(d.id.split("-")[1].split(":")[0])
            assert np.array_equal(np.asarray(d.image), images[index]) and labels[index] == d.extra["label"]
