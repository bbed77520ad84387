"""Hand-worked cases for aim.eval.metrics (official VQA accuracy, exact and contained match).

Every expected value below was worked out by hand from the official VQA evaluation algorithm;
the comments show the arithmetic.
"""
import pytest

from aim.eval.metrics import MetricError, contains_match, exact_match, normalize_answer, vqa_accuracy


def ten(match: str, k: int, other: str = "cat") -> list[str]:
    """Ten annotator answers, ``k`` of them ``match``."""
    return [match] * k + [other] * (10 - k)


# ---------------------------------------------------------------- normalize_answer

@pytest.mark.parametrize("text, expected", [
    # punctuation
    ("yes.", "yes"),                  # period not before a digit is deleted
    ("yes!", "yes"),                  # '!' touches no space -> space, then split/join
    ("yes?", "yes"),
    ('"yes"', "yes"),                 # quotes -> spaces
    ("(yes)", "yes"),
    ("1,000", "1000"),                # digit,digit: every mark deleted, the number stays whole
    ("1,000 dogs!", "1000 dogs"),     # digit,digit also deletes '!' instead of spacing it
    ("well-done 1,2", "welldone 12"),
    ("red,blue", "red blue"),         # comma touches no space -> replaced by a space
    ("red, blue", "red blue"),        # comma followed by a space -> deleted
    ("t-shirt", "t shirt"),
    ("t-shirt - red", "tshirt red"),  # ' - ' touches a space, so every '-' is deleted
    ("3.5", "3.5"),                   # period before a digit stays
    ("3.5.", "3.5"),
    ("5.", "5"),
    (".5", ".5"),
    ("mr. smith", "mr smith"),
    ("dog's", "dog's"),               # apostrophe is not in the punctuation list
    ("10:30", "10:30"),               # nor is the colon
    ("." * 40, "." * 8),              # at most 32 periods are deleted (official re.UNICODE-as-count)
    # articles
    ("a dog", "dog"),
    ("The Dog", "dog"),
    ("an apple", "apple"),
    ("a", ""),
    ("yes (a)", "yes"),
    # number words (whole words only)
    ("two", "2"),
    ("none", "0"),
    ("zero", "0"),
    ("Ten", "10"),
    ("eleven", "eleven"),
    ("someone", "someone"),
    ("two dogs", "2 dogs"),
    # contractions
    ("dont", "don't"),
    ("Dont", "don't"),
    ("isnt", "isn't"),
    ("I don't know", "i don't know"),
    ("Im", "im"),                     # capitalised keys never fire: the text is lower-cased first
    ("somebody'd", "somebodyd"),      # the official table maps this one backwards
    # case and whitespace
    ("  Two\tDogs\n", "2 dogs"),
    ("YES", "yes"),
    ("black  and   white", "black and white"),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_normalize_answer_rejects_non_strings():
    with pytest.raises(MetricError):
        normalize_answer(None)


# ---------------------------------------------------------------- vqa_accuracy: the averaging

@pytest.mark.parametrize("k, expected", [
    (0, 0.0),
    # 1 match: held out -> 0/3; each of the 9 others -> 1/3.  9*(1/3)/10
    (1, 0.3),
    # 2 matches: held out -> 1/3 (x2); others -> 2/3 (x8).  (2/3 + 16/3)/10
    (2, 0.6),
    # 3 matches: held out -> 2/3 (x3); others -> min(1, 3/3) (x7).  (2 + 7)/10
    (3, 0.9),
    # 4 matches: held out -> 3/3 (x4); others -> min(1, 4/3) (x6)
    (4, 1.0),
    (7, 1.0),
    (10, 1.0),
])
def test_ten_annotators(k, expected):
    assert vqa_accuracy("yes", ten("yes", k, other="no")) == pytest.approx(expected)


def test_prediction_is_normalised():
    # "Yes." -> "yes"; 2 of 10 match -> 0.6
    assert vqa_accuracy("Yes.", ten("yes", 2, other="no")) == pytest.approx(0.6)


def test_mixed_answers_are_normalised():
    # answers differ -> each is normalised: "Two" and "2" and "two." all become "2": 3 matches -> 0.9
    answers = ["Two", "2", "two."] + ["cat"] * 7
    assert vqa_accuracy("two", answers) == pytest.approx(0.9)


def test_number_word_prediction_matches_digit_answers():
    assert vqa_accuracy("none", ten("0", 1, other="1")) == pytest.approx(0.3)


def test_articles_and_contractions_in_answers():
    # "the dog", "a dog", "dog" all normalise to "dog": 3 matches -> 0.9
    answers = ["the dog", "a dog", "dog"] + ["cat"] * 7
    assert vqa_accuracy("Dog", answers) == pytest.approx(0.9)
    # "dont" -> "don't": 2 matches -> 0.6
    assert vqa_accuracy("don't", ["dont", "don't"] + ["yes"] * 8) == pytest.approx(0.6)


# ---------------------------------------------------------------- identical answers (normalised too)

def test_identical_answers_are_normalised_like_any_others():
    # open_flamingo's current scorer (and lmms-eval) normalise the ground truths always; the 2015
    # script compared a list of identical answers verbatim, so these scored 0 there
    assert vqa_accuracy("two", ["Two"] * 10) == 1.0
    assert vqa_accuracy("Two", ["Two"] * 10) == 1.0
    assert vqa_accuracy("the dog", ["the dog"] * 10) == 1.0
    assert vqa_accuracy("a dog", ["a dog"] * 3) == pytest.approx(2 / 3)
    assert vqa_accuracy("1,000", ["1,000"] * 10) == 1.0
    assert vqa_accuracy("3", ["Two"] * 10) == 0.0


def test_identical_clean_answers_match_normalised_prediction():
    assert vqa_accuracy("Yes.", ["yes"] * 10) == 1.0
    assert vqa_accuracy("the dog", ["dog"] * 10) == 1.0
    assert vqa_accuracy("two", ["two"] * 9 + ["2"]) == 1.0
    assert vqa_accuracy("yes", ["yes\n", " yes", "yes\t"] + ["yes"] * 7) == 1.0


def _reference_vqa_accuracy(prediction: str, answers: list) -> float:
    """An independent transcription of open_flamingo's ``VQAEval.evaluate`` for one question:
    annotation dicts with their own ids, the leave-one-out by dict inequality, both sides
    processed by the punctuation and digit/article steps (written here from the published
    algorithm, not from aim's code)."""
    import re as _re

    punct = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
             ",", "?", "!"]
    period = _re.compile(r"(?!<=\d)(\.)(?!\d)")
    comma = _re.compile(r"(\d)(\,)(\d)")
    numbers = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
               "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
    contractions = {"dont": "don't", "isnt": "isn't", "cant": "can't", "whats": "what's"}

    def punctuation(text):
        out = text
        for p in punct:
            if (p + " " in text or " " + p in text) or _re.search(comma, text) is not None:
                out = out.replace(p, "")
            else:
                out = out.replace(p, " ")
        return period.sub("", out, _re.UNICODE)

    def digit_article(text):
        words = []
        for w in text.lower().split():
            w = numbers.get(w, w)
            if w not in ("a", "an", "the"):
                words.append(w)
        return " ".join(contractions.get(w, w) for w in words)

    def clean(text):
        return digit_article(punctuation(text.replace("\n", " ").replace("\t", " ").strip()))

    gts = [{"answer": clean(a), "answer_id": i + 1} for i, a in enumerate(answers)]
    res = clean(prediction)
    accs = []
    for held in gts:
        others = [g for g in gts if g != held]
        accs.append(min(1, len([g for g in others if g["answer"] == res]) / 3))
    return sum(accs) / len(accs)


def test_vqa_accuracy_equals_the_reference_scorer_on_random_cases():
    import random

    vocabulary = ["Two", "two", "2", "a dog", "the dog", "dog", "Dog.", "dogs", "1,000", "1000", "yes", "Yes.",
                  "yes\n", " no", "No!", "don't", "dont", "3.5", "3.5.", "red-white", "red white", "red/white",
                  "(red)", "none", "0", "an apple", "apple", "what's up", "whats up", "t-shirt", "tshirt",
                  "\"quoted\"", "quoted", "ten", "10", "3:30", "it's", "1,2", "12"]
    rng = random.Random(20261204)
    cases = identical = 0
    while cases < 2500:
        n = rng.choice([2, 3, 5, 10, 10, 10])
        if rng.random() < 0.25:
            answers = [rng.choice(vocabulary)] * n
            identical += 1
        else:
            pick = rng.sample(vocabulary, rng.randint(1, 4))
            answers = [rng.choice(pick) for _ in range(n)]
        prediction = rng.choice(answers) if rng.random() < 0.6 else rng.choice(vocabulary)
        assert vqa_accuracy(prediction, answers) == pytest.approx(_reference_vqa_accuracy(prediction, answers)), \
            (prediction, answers)
        cases += 1
    assert identical > 500


# ---------------------------------------------------------------- other answer counts

def test_fewer_than_ten_answers():
    # 3 identical: each held out leaves 2 matches -> 2/3
    assert vqa_accuracy("cat", ["cat"] * 3) == pytest.approx(2 / 3)
    # 2 identical: each held out leaves 1 match -> 1/3
    assert vqa_accuracy("cat", ["cat", "cat"]) == pytest.approx(1 / 3)
    # 5 answers, 2 match: held out match -> 1/3 (x2), others -> 2/3 (x3).  (2/3 + 2)/5 = 8/15
    assert vqa_accuracy("cat", ["cat", "cat", "dog", "dog", "cow"]) == pytest.approx(8 / 15)


def test_single_answer():
    assert vqa_accuracy("2", ["Two"]) == 1.0
    assert vqa_accuracy("Dog.", ["a dog"]) == 1.0
    assert vqa_accuracy("3", ["Two"]) == 0.0
    assert vqa_accuracy("yes", "yes") == 1.0   # a bare string is one answer


def test_dict_answers_vqav2_style():
    answers = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
               for i, a in enumerate(["yes", "yes"] + ["no"] * 8)]
    assert vqa_accuracy("Yes", answers) == pytest.approx(0.6)
    assert exact_match("yes", answers) == 1.0
    assert contains_match("I think yes", answers) == 1.0


def test_leave_one_out_is_positional():
    # the official code drops answers equal to the held-out one; with its dicts (distinct
    # answer_id) that is one answer; here plain equal strings still count as separate annotators
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0


@pytest.mark.parametrize("answers", [[], [{"text": "yes"}], [None]])
def test_bad_answers(answers):
    with pytest.raises(MetricError):
        vqa_accuracy("yes", answers)


def test_bad_prediction():
    with pytest.raises(MetricError):
        vqa_accuracy(None, ["yes"])


# ---------------------------------------------------------------- exact_match

@pytest.mark.parametrize("prediction, answers, expected", [
    ("The Dog.", ["dog"], 1.0),
    ("dogs", ["dog"], 0.0),
    ("two", ["cat", "2"], 1.0),
    ("2", ["Two", "Two", "Two"], 1.0),   # answers are always normalised here
    ("label B", ["label b"], 1.0),
    ("B", ["label b"], 0.0),
    ("", ["yes"], 0.0),
])
def test_exact_match(prediction, answers, expected):
    assert exact_match(prediction, answers) == expected


# ---------------------------------------------------------------- contains_match

@pytest.mark.parametrize("prediction, answers, expected", [
    ("It is a blue circle.", ["blue circle"], 1.0),
    ("It is a blue circle.", ["A blue circle"], 1.0),
    ("It is a blue circle.", ["circle"], 1.0),
    ("It is a blue circle.", ["blue circles"], 0.0),
    ("It is a blue circle.", ["ue"], 0.0),        # whole words only
    ("It is a blue circle.", ["red", "square", "blue"], 1.0),
    ("There are two dogs.", ["2"], 1.0),          # "two" -> "2" in the prediction
    ("circle", ["blue circle"], 0.0),
    ("the", ["the"], 0.0),                        # an answer that normalises to nothing
    ("", ["yes"], 0.0),
])
def test_contains_match(prediction, answers, expected):
    assert contains_match(prediction, answers) == expected
