"""Text metrics (VQA, ANLS, OCR error rates, CIDEr-D) on small cases whose expected values are worked by hand."""

from __future__ import annotations

import math

import pytest

from evals.anls import anls, anls_score
from evals.cider import cider_d, tokenize
from evals.edit_distance import edit_distance
from evals.ocr import cer, ocr_scores, wer
from evals.vqa import exact_match, normalize_answer, vqa_accuracy, vqa_scores


@pytest.mark.parametrize(
    "a,b,expected",
    [
        ("kitten", "sitting", 3),  # k->s, e->i, +g
        ("", "abc", 3),  # three insertions
        ("flaw", "lawn", 2),  # -f, +n
        (["the", "cat"], ["the", "hat"], 1),  # words as tokens: one substitution
        ("same", "same", 0),
    ],
)
def test_edit_distance(a, b, expected):
    assert edit_distance(a, b) == expected
    assert edit_distance(b, a) == expected


@pytest.mark.parametrize(
    "raw,normalized",
    [
        ("Two dogs.", "2 dogs"),  # number word, trailing period, lower case
        ("yes/no", "yes no"),  # punctuation not touching a space becomes a space
        ("red, white", "red white"),  # comma before a space is deleted
        ("1,000", "1000"),  # digit-comma-digit: punctuation deleted, not spaced
        ("2.5", "2.5"),  # a period before a digit stays
        ("The cat in a hat", "cat in hat"),  # articles dropped
        ("dont know", "don't know"),  # contraction restored
        ("its red", "its red"),  # ambiguous 'its' left alone
        ("  Yes\n", "yes"),  # outer whitespace and line break
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


@pytest.mark.parametrize(
    "prediction,answers,expected",
    [
        # 10 references, 3 match: leave-one-out mean = (3 × min(1, 2/3) + 7 × min(1, 3/3)) / 10 = 0.9
        ("two", ["2"] * 3 + ["3"] * 7, 0.9),
        # 4 of 10 match: every subset of 9 keeps >= 3 matches -> 1.0
        ("2", ["2"] * 4 + ["3"] * 6, 1.0),
        # 1 of 10 matches: (1 × 0/3 + 9 × 1/3) / 10 = 0.3
        ("cat", ["cat"] + ["dog"] * 9, 0.3),
        # no match -> 0
        ("bird", ["cat"] * 10, 0.0),
        # a single reference: no leave-one-out, min(1, 1/3)
        ("cat", ["cat"], 1 / 3),
    ],
)
def test_vqa_accuracy(prediction, answers, expected):
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_plain_form_and_exact_match():
    # Without leave-one-out it is min(1, matches / 3): 3 matches -> 1, 2 matches -> 2/3.
    assert vqa_accuracy("two", ["2", "2", "2", "3"], leave_one_out=False) == 1.0
    assert vqa_accuracy("two", ["2", "2", "3"], leave_one_out=False) == pytest.approx(2 / 3)
    assert exact_match("The Dog.", ["dog", "puppy"]) == 1.0
    assert exact_match("dogs", ["dog"]) == 0.0
    result = vqa_scores(["dog", "cat"], [["dog"] * 10, ["bird"] * 10])
    # exact: (1 + 0) / 2; accuracy: (1 + 0) / 2; ANLS: "cat" vs "bird" NL = 3/4 >= 0.5 -> 0, so (1 + 0) / 2
    assert (result.exact_match, result.vqa_accuracy, result.anls, result.total) == (0.5, 0.5, 0.5, 2)


@pytest.mark.parametrize(
    "prediction,answers,expected",
    [
        ("hello", ["hello"], 1.0),  # exact
        ("Hello ", ["hello"], 1.0),  # case and outer spaces are normalized away
        ("helo", ["hello"], 0.8),  # distance 1 / max len 5 = 0.2 -> 0.8
        ("abc", ["abd"], 1 - 1 / 3),  # distance 1 / 3 = 0.33 < 0.5 -> 0.667
        ("ab", ["cd"], 0.0),  # distance 2 / 2 = 1.0 >= 0.5 -> 0
        ("abcd", ["abxy"], 0.0),  # distance 2 / 4 = 0.5, not below the threshold -> 0
        ("helo", ["world", "hello"], 0.8),  # best over references
        ("", [""], 1.0),  # both empty: identical
        ("x", [], 0.0),  # no references
    ],
)
def test_anls_score(prediction, answers, expected):
    assert anls_score(prediction, answers) == pytest.approx(expected, abs=1e-12)


def test_anls_mean():
    # (1.0 + 0.8 + 0.0) / 3
    assert anls(["hello", "helo", "ab"], [["hello"], ["hello"], ["cd"]]) == pytest.approx(1.8 / 3)
    with pytest.raises(ValueError, match="as many"):
        anls(["a"], [])


def test_cer_wer_known_values():
    preds = ["hello world", "the cat sat"]
    refs = ["hallo world", "the cat sat down"]
    # CER: "hello world" vs "hallo world" = 1 edit; "the cat sat" vs "the cat sat down" = 5 insertions (" down");
    # reference lengths 11 + 16 = 27 -> 6 / 27.
    assert cer(preds, refs) == pytest.approx(6 / 27)
    # WER: 1 substitution (hello/hallo) + 1 insertion (down) over 2 + 4 reference words -> 2 / 6.
    assert wer(preds, refs) == pytest.approx(2 / 6)
    result = ocr_scores(preds + ["A  B\nC"], refs + ["A B C"])
    # The third pair matches after whitespace collapsing, so 1 exact of 3 and it adds no errors.
    assert result.exact_match == pytest.approx(1 / 3)
    assert result.cer == pytest.approx(6 / (27 + 5))
    assert result.total == 3


def test_error_rates_with_empty_references_do_not_divide_by_zero():
    assert cer(["abc"], [""]) == 3.0  # 3 insertions over a denominator floored at 1
    assert wer([""], [""]) == 0.0


@pytest.mark.parametrize(
    "text,tokens",
    [
        ("A man's dog.", ["a", "man", "'s", "dog"]),  # clitic split, period dropped
        ("doesn't jump!", ["does", "n't", "jump"]),  # n't split, ! dropped
        ("a T-shirt, 2.5 m", ["a", "t-shirt", "2.5", "m"]),  # hyphenated word and decimal kept whole
    ],
)
def test_cider_tokenize(text, tokens):
    assert tokenize(text) == tokens


# Two images, one reference each: "a cat" and "a dog". log(#images) = log 2. "a" is in both images' references,
# so its idf weight is log 2 - log 2 = 0; "cat", "dog", "a cat", "a dog" each have weight log 2.
CIDER_CASES = [
    # identical captions: order 1 cos = (0·0 + L·L) / (L·L) = 1, order 2 cos = 1, orders 3-4 have no n-grams (0);
    # mean over 4 orders = 0.5, × 10 = 5.0 for each image -> 5.0
    ({1: "a cat", 2: "a dog"}, {1: 5.0, 2: 5.0}),
    # "cat" alone: order 1 cos = 1 but no bigrams; δ = 0 - 1 bigrams -> penalty exp(-1/72):
    # 10 · (1 · e^(-1/72) + 0) / 4 = 2.5 e^(-1/72)
    ({1: "cat", 2: "a dog"}, {1: 2.5 * math.exp(-1 / 72), 2: 5.0}),
    # "cat cat": tf 2 -> weight 2L, clipped to the reference's L: min(2L, L) · L / (2L · L) = 0.5 at order 1;
    # the bigram "cat cat" is not in the reference (0); same bigram count (1) -> no penalty: 10 · 0.5 / 4 = 1.25
    ({1: "cat cat", 2: "a dog"}, {1: 1.25, 2: 5.0}),
    # "a dog" for the cat image: "a" has weight 0 and "dog"/"a dog" are not in its reference -> 0
    ({1: "a dog", 2: "a dog"}, {1: 0.0, 2: 5.0}),
]


@pytest.mark.parametrize("candidates,per_image", CIDER_CASES)
def test_cider_known_values(candidates, per_image):
    result = cider_d(candidates, {1: ["a cat"], 2: ["a dog"]})
    assert result.per_image == pytest.approx(per_image, abs=1e-12)
    assert result.score == pytest.approx(sum(per_image.values()) / 2, abs=1e-12)


def test_cider_averages_over_references_and_one_image_scores_zero():
    # Image 1 has two references, "a cat" and "a dog"; image 2 has "a bird". df: a=2, cat=1, dog=1, bird=1.
    # Candidate "a cat" vs "a cat": orders 1, 2 cos 1 -> 0.5; vs "a dog": nothing shared with weight -> 0.
    # Image 1 = 10 · (0.5 + 0) / 2 = 2.5; image 2 ("a bird" vs itself) = 5.0.
    result = cider_d({1: "a cat", 2: "a bird"}, {1: ["a cat", "a dog"], 2: ["a bird"]})
    assert result.per_image == pytest.approx({1: 2.5, 2: 5.0})
    # A single image: every idf is log 1 - log 1 = 0, so CIDEr is 0 (the toolkit behaves the same way).
    assert cider_d({1: "a cat"}, {1: ["a cat"]}).score == 0.0
    with pytest.raises(ValueError, match="same images"):
        cider_d({1: "a"}, {2: ["a"]})
