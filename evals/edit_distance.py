"""Levenshtein distance over any sequences: characters of a string for CER and ANLS, words for WER."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Minimum number of insertions, deletions and substitutions turning `a` into `b` (each costs 1).

    Two-row dynamic programme, O(len(a) * len(b)) time and O(min) memory: answers and OCR lines are short, so
    a pure-Python loop is fast enough and keeps the package free of a compiled dependency.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]
