"""Confidence scores from the model's own log-probabilities.

generate can return, per generated token, its decoded piece (``"".join(pieces) == text``) and its natural-log
probability. An object's score is the probability of its tokens averaged in log space (the geometric mean of the
token probabilities), so that COCO AP ranks real confidences instead of a constant. Parsing works on characters
and the model works on tokens; the helpers here map one to the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def token_offsets(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Character range [start, end) of each token piece in the joined text."""
    offsets = []
    pos = 0
    for piece in tokens:
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
    return offsets


def tokens_in_span(tokens: Sequence[str], start: int, end: int) -> list[int]:
    """Indices of the tokens whose characters overlap text[start:end].

    A token that straddles the span edge counts (a label's first word often shares a token with the space before
    it). A zero-length piece counts when it sits strictly inside the span, since it was still generated there.
    """
    hits = []
    for i, (a, b) in enumerate(token_offsets(tokens)):
        if (a < b and a < end and b > start) or (a == b and start < a < end):
            hits.append(i)
    return hits


def span_score(tokens: Sequence[str], logprobs: Sequence[float], start: int, end: int) -> float | None:
    """exp(mean log-prob) of the tokens overlapping text[start:end]; None when no token overlaps."""
    idx = tokens_in_span(tokens, start, end)
    if not idx:
        return None
    return math.exp(sum(float(logprobs[i]) for i in idx) / len(idx))
