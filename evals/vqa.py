"""VQA metrics: exact match after answer normalization, and the VQAv2 accuracy min(1, matches / 3).

Normalization follows the VQAv2 evaluation's answer processing (visualqa.org/evaluation.html), a documented
subset of it:
1. line breaks and tabs become spaces; outer spaces go;
2. punctuation from the VQA list (; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !) is deleted when it touches a space
   or when the text has a digit-comma-digit group ("1,000" -> "1000"), and becomes a space otherwise
   ("yes/no" -> "yes no"); apostrophes and colons are kept;
3. a period not followed by a digit is deleted ("2.5" keeps its point, "dog." loses it);
4. lower case; the articles a, an, the are dropped; number words zero..ten (and "none") become digits;
   common contractions written without the apostrophe get it back ("dont" -> "don't"). Ambiguous ones that are
   also words (its, lets, were, well, hell, ill, id, wed, shell) are left alone, as the official list leaves them.

The official evaluation normalizes the references only when annotators disagree; here both sides are always
normalized, which differs only for answers whose ten annotators agree letter for letter on an unnormalized form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_DIGIT_COMMA = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
_ARTICLES = frozenset({"a", "an", "the"})
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_CONTRACTED_TEXT = (
    "ain't aren't can't couldn't couldn't've could've didn't doesn't don't hadn't hasn't haven't he'd he's "
    "how'd how'll how's isn't it'd it'll ma'am mightn't might've mustn't must've needn't o'clock shan't "
    "she'd've should've shouldn't shouldn't've somebody's someone's something's that's there'd there're there's "
    "they'd they'll they're they've wasn't we've weren't what'll what're what's what've when's where'd where's "
    "where've who'd who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all you'd "
    "you'll you're you've"
)
_CONTRACTIONS = {word.replace("'", ""): word for word in _CONTRACTED_TEXT.split()}


def normalize_answer(text: str) -> str:
    """The VQA answer normalization described in the module docstring."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    delete_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for p in _PUNCTUATION:
        touches_space = f"{p} " in text or f" {p}" in text
        out = out.replace(p, "" if delete_all or touches_space else " ")
    out = _PERIOD.sub("", out)
    words = []
    for word in out.lower().split():
        if word in _ARTICLES:
            continue
        word = _NUMBERS.get(word, word)
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals any normalized reference answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def vqa_accuracy(prediction: str, answers: Sequence[str], *, leave_one_out: bool = True) -> float:
    """VQAv2 accuracy of one answer: min(1, matches / 3), matches = references equal to it after normalization.

    leave_one_out (the official protocol, used for the published VQAv2/TextVQA numbers): the score is averaged
    over the n subsets that leave one reference out, so with 10 references and 3 matches it is
    (3 × min(1, 2/3) + 7 × min(1, 3/3)) / 10 = 0.9, not 1. With fewer than two references, or with
    leave_one_out=False, it is plain min(1, matches / 3) over all of them.
    """
    pred = normalize_answer(prediction)
    hits = [pred == normalize_answer(a) for a in answers]
    matches = sum(hits)
    n = len(hits)
    if not leave_one_out or n < 2:
        return min(1.0, matches / 3)
    return sum(min(1.0, (matches - hit) / 3) for hit in hits) / n


@dataclass(frozen=True)
class VqaResult:
    exact_match: float
    vqa_accuracy: float
    anls: float
    total: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "exact_match": self.exact_match,
            "vqa_accuracy": self.vqa_accuracy,
            "ANLS": self.anls,
            "total": self.total,
        }


def vqa_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> VqaResult:
    """Means over questions of exact match, VQAv2 accuracy and ANLS (evals/anls.py)."""
    from evals.anls import anls

    if len(predictions) != len(answers):
        raise ValueError(f"expected as many answer lists as predictions but got {len(answers)} and {len(predictions)}")
    n = len(predictions)
    if not n:
        return VqaResult(0.0, 0.0, 0.0, 0)
    pairs = list(zip(predictions, answers, strict=True))
    return VqaResult(
        exact_match=sum(exact_match(p, a) for p, a in pairs) / n,
        vqa_accuracy=sum(vqa_accuracy(p, a) for p, a in pairs) / n,
        anls=anls(predictions, answers),
        total=n,
    )
