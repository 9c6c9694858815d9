"""ANLS (average normalized Levenshtein similarity), the DocVQA / ST-VQA metric.

Per question: the best over its reference answers of 1 - NL, where NL = edit distance / max(len(prediction),
len(reference)) on lower-cased, whitespace-collapsed strings; a similarity below 1 - threshold (NL >= 0.5 with the
standard threshold) scores 0, so that a wrong answer that happens to share letters earns nothing. ANLS is the mean
over questions.
"""

from __future__ import annotations

from collections.abc import Sequence

from evals.edit_distance import edit_distance


def _normalize(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls_score(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """One question's score in [0, 1]; 0 when there are no reference answers."""
    pred = _normalize(prediction)
    best = 0.0
    for answer in answers:
        ref = _normalize(answer)
        longest = max(len(pred), len(ref))
        nl = edit_distance(pred, ref) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


def anls(predictions: Sequence[str], answers: Sequence[Sequence[str]], threshold: float = 0.5) -> float:
    """Mean of `anls_score` over questions; 0 for no questions."""
    if len(predictions) != len(answers):
        raise ValueError(f"expected as many answer lists as predictions but got {len(answers)} and {len(predictions)}")
    if not predictions:
        return 0.0
    return sum(anls_score(p, a, threshold) for p, a in zip(predictions, answers, strict=True)) / len(predictions)
