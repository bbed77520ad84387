"""Answer-scoring metrics: the VQA accuracy of the reference scorers, exact match, contained match.

``vqa_accuracy`` follows **open_flamingo's current scorer** (``open_flamingo/eval/vqa_metric.py``,
after its change "always postprocess gt answers"), which is also what lmms-eval computes:

1. The prediction and every ground-truth answer have newlines and tabs turned into spaces and are
   stripped, then go through the punctuation step and the digit/article step
   (:func:`normalize_answer`). Both sides are normalised always: ``["a dog"] * 3`` against
   ``"a dog"`` scores 1.0 and ``["1,000"] * 10`` against ``"1,000"`` scores 1.0. (The 2015 VQA
   script normalised the ground truths only when they were not all identical, so those cases
   scored 0; that behaviour is not offered.)
2. For each ground-truth answer in turn, the accuracy is ``min(1, n / 3)``, where ``n`` counts
   the *other* answers equal to the prediction; the result is the mean over all answers. With
   ten answers: 1 match -> 0.3, 2 -> 0.6, 3 -> 0.9, 4 or more -> 1.0.

The punctuation step, for each mark of :data:`PUNCTUATION` in order: when the mark touches a
space somewhere in the text (``"p "`` or ``" p"``), or the text holds a digit-comma-digit
(``"1,000"``), the mark is deleted everywhere; otherwise it is replaced by a space. Then every
period not followed by a digit is deleted (``"yes."`` -> ``"yes"``, ``"3.5"`` stays). The
digit/article step lower-cases and splits on whitespace, maps number words (``"two"`` -> ``"2"``,
``"none"`` -> ``"0"``), drops the articles ``a``, ``an`` and ``the``, restores apostrophes of
contractions (``"dont"`` -> ``"don't"``) and joins with single spaces.

Differences from the reference scorer, at the edges:

* Leave-one-out goes by position. The reference drops the answer dicts that compare equal to
  the held-out one, which is one answer for VQA's annotation dicts (each has its own
  ``answer_id``) but would be all the equal copies for plain strings.
* With a single answer the reference formula always gives 0 (no other answers); here the result
  is 1.0 when the normalised prediction equals the normalised answer, else 0.0 (for datasets
  with one answer per question, such as easy-VQA).

Quirks kept on purpose: ``":"`` and ``"'"`` are not punctuation (``"dog's"`` stays); the
reference period regex ``(?!<=\\d)(\\.)(?!\\d)`` has a look-ahead where a look-behind was meant,
so it deletes every period not followed by a digit (``".5"`` stays, ``"5."`` -> ``"5"``), and at
most 32 of them (``re.UNICODE``, 32, is passed where ``re.sub`` expects its count); contraction
keys with capitals (``"Im"``, ``"Ive"``) never fire because the text is lower-cased first, and
``"somebody'd"`` maps to ``"somebodyd"``, as in the reference table.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Iterable, Mapping, Union

from ..errors import MetricError

logger = logging.getLogger(__name__)

__all__ = ["ARTICLES", "CONTRACTIONS", "NUMBER_WORDS", "PUNCTUATION", "MetricError", "contains_match",
           "exact_match", "normalize_answer", "vqa_accuracy"]

Answer = Union[str, Mapping[str, Any]]


#: Number words mapped to digits (whole words only).
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

#: Words dropped by the digit/article step.
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

#: Punctuation marks handled one by one, in this order (``.`` is handled separately).
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
    "?", "!",
)

# The official contraction table, as "written-form normalised-form" pairs.
_CONTRACTION_PAIRS = """
aint ain't  arent aren't  cant can't  couldve could've  couldnt couldn't
couldn'tve couldn't've  couldnt've couldn't've  didnt didn't  doesnt doesn't  dont don't
hadnt hadn't  hadnt've hadn't've  hadn'tve hadn't've  hasnt hasn't  havent haven't
hed he'd  hed've he'd've  he'dve he'd've  hes he's  howd how'd  howll how'll  hows how's
Id've I'd've  I'dve I'd've  Im I'm  Ive I've  isnt isn't  itd it'd  itd've it'd've
it'dve it'd've  itll it'll  let's let's  maam ma'am  mightnt mightn't  mightnt've mightn't've
mightn'tve mightn't've  mightve might've  mustnt mustn't  mustve must've  neednt needn't
notve not've  oclock o'clock  oughtnt oughtn't  ow's'at 'ow's'at  'ows'at 'ow's'at
'ow'sat 'ow's'at  shant shan't  shed've she'd've  she'dve she'd've  she's she's
shouldve should've  shouldnt shouldn't  shouldnt've shouldn't've  shouldn'tve shouldn't've
somebody'd somebodyd  somebodyd've somebody'd've  somebody'dve somebody'd've
somebodyll somebody'll  somebodys somebody's  someoned someone'd  someoned've someone'd've
someone'dve someone'd've  someonell someone'll  someones someone's  somethingd something'd
somethingd've something'd've  something'dve something'd've  somethingll something'll
thats that's  thered there'd  thered've there'd've  there'dve there'd've  therere there're
theres there's  theyd they'd  theyd've they'd've  they'dve they'd've  theyll they'll
theyre they're  theyve they've  twas 'twas  wasnt wasn't  wed've we'd've  we'dve we'd've
weve we've  werent weren't  whatll what'll  whatre what're  whats what's  whatve what've
whens when's  whered where'd  wheres where's  whereve where've  whod who'd  whod've who'd've
who'dve who'd've  wholl who'll  whos who's  whove who've  whyll why'll  whyre why're
whys why's  wont won't  wouldve would've  wouldnt wouldn't  wouldnt've wouldn't've
wouldn'tve wouldn't've  yall y'all  yall'll y'all'll  y'allll y'all'll  yall'd've y'all'd've
y'alld've y'all'd've  y'all'dve y'all'd've  youd you'd  youd've you'd've  you'dve you'd've
youll you'll  youre you're  youve you've
"""
_tokens = _CONTRACTION_PAIRS.split()
#: Contractions written without apostrophes, mapped to their official form.
CONTRACTIONS: dict[str, str] = dict(zip(_tokens[0::2], _tokens[1::2]))
del _tokens

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_MAX_PERIODS_REMOVED = 32  # the official call passes re.UNICODE (== 32) as re.sub's count


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    """The official punctuation step (see the module docstring)."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        # The test looks at the *input* text, the replacement works on the running output.
        if delete_all or (mark + " ") in text or (" " + mark) in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_REMOVED)


def _process_digits_articles(text: str) -> str:
    """The official digit/article/contraction step (see the module docstring)."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """Normalise an answer the official VQA way: whitespace, punctuation, then digits/articles.

    >>> normalize_answer("  Two dogs!\\n")
    '2 dogs'
    >>> normalize_answer("The cat isnt 3.5 m tall.")
    "cat isn't 3.5 m tall"
    """
    if not isinstance(text, str):
        raise MetricError(f"normalize_answer expects a string, got {type(text).__name__}: {text!r}")
    return _process_digits_articles(_process_punctuation(_clean_whitespace(text)))


def _answer_texts(answers: Union[Answer, Iterable[Answer]]) -> list[str]:
    """Ground-truth answers as strings: plain strings, numbers or VQAv2 dicts with an ``answer``."""
    if isinstance(answers, (str, Mapping)):
        answers = [answers]
    texts = []
    for a in answers:
        if isinstance(a, Mapping):
            if "answer" not in a:
                raise MetricError(f"answer dict {a!r} has no 'answer' key; pass "
                                  "{'answer': ...} dicts (VQAv2 style) or plain strings")
            a = a["answer"]
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            a = str(a)
        if not isinstance(a, str):
            raise MetricError(f"answers must be strings or {{'answer': str}} dicts, got {type(a).__name__}: {a!r}")
        texts.append(a)
    if not texts:
        raise MetricError("no ground-truth answers given; pass at least one answer")
    return texts


def _prediction_text(prediction: Any) -> str:
    if not isinstance(prediction, str):
        raise MetricError(f"a prediction must be a string, got {type(prediction).__name__}: {prediction!r}")
    return prediction


def vqa_accuracy(prediction: str, answers: Union[Answer, Iterable[Answer]]) -> float:
    """The VQA accuracy of ``prediction`` against the annotators' ``answers``, as open_flamingo's
    current scorer and lmms-eval compute it.

    ``answers`` holds strings or VQAv2 dicts (``{"answer": ..., "answer_confidence": ...,
    "answer_id": ...}``), usually ten; any number from one works. For each answer, the accuracy
    is ``min(1, matches among the other answers / 3)``, and the mean over answers is returned.
    Prediction and answers are always normalised; a single answer scores 1.0 on a normalised
    match. See the module docstring for details.
    """
    pred = normalize_answer(_prediction_text(prediction))
    gts = [normalize_answer(a) for a in _answer_texts(answers)]
    if len(gts) == 1:
        return 1.0 if pred == gts[0] else 0.0
    matches = [a == pred for a in gts]
    total = sum(matches)
    acc = sum(min(1.0, (total - held_out) / 3.0) for held_out in matches) / len(gts)
    logger.debug("vqa_accuracy(%r -> %r): %d of %d answers match, accuracy %.4f",
                 prediction, pred, total, len(gts), acc)
    return acc


def exact_match(prediction: str, answers: Union[Answer, Iterable[Answer]]) -> float:
    """1.0 if the normalised prediction equals any normalised answer, else 0.0.

    For classification and label-binding tasks; unlike :func:`vqa_accuracy`, answers are always
    normalised.
    """
    pred = normalize_answer(_prediction_text(prediction))
    return 1.0 if any(pred == normalize_answer(a) for a in _answer_texts(answers)) else 0.0


def contains_match(prediction: str, answers: Union[Answer, Iterable[Answer]]) -> float:
    """1.0 if some normalised answer occurs as a whole-word sequence in the normalised prediction.

    For chatty outputs: ``"It is a blue circle."`` contains ``"blue circle"`` and ``"circle"`` but
    not ``"blue circles"`` or ``"ue"``. Answers that normalise to nothing (``"the"``) never match.
    """
    pred_words = normalize_answer(_prediction_text(prediction)).split()
    for answer in _answer_texts(answers):
        words = normalize_answer(answer).split()
        n = len(words)
        if n and any(pred_words[i:i + n] == words for i in range(len(pred_words) - n + 1)):
            return 1.0
    return 0.0
