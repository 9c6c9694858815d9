"""CIDEr-D, the caption metric of the coco-caption toolkit (reported there as "CIDEr").

For each image, the candidate and every reference become tf-idf vectors of their n-grams, one vector per order
n = 1..4: term frequency is the raw count, document frequency df(g) is the number of images whose references
contain g, and the weight is count × (log(#images) − log(max(1, df(g)))). Per order, similarity with one
reference is Σ min(w_cand, w_ref) · w_ref / (‖cand‖ · ‖ref‖) — the min "clips" n-grams repeated in the candidate
beyond the reference — times a Gaussian length penalty exp(−δ² / (2σ²)), σ = 6. The image's score is the mean
over orders, averaged over its references, × 10; CIDEr is the mean over images.

Two details are the toolkit's and kept for comparability: δ is the difference of the *bigram* counts (the toolkit
measures length that way; for non-empty captions it equals the difference in words), and the idf statistics come
from the references of the evaluated images themselves, so a single image scores 0 (log 1 = 0).

Tokenization approximates the PTB tokenizer the toolkit runs: lower case, clitics split ("don't" -> "do n't",
"dog's" -> "dog 's"), punctuation dropped, hyphenated words kept whole.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|[^\W_]+(?:[-'.][^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased PTB-like tokens without punctuation (see the module docstring)."""
    text = _CLITIC.sub(r" \1", text.lower())
    return _TOKEN.findall(text)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


@dataclass(frozen=True)
class CiderResult:
    score: float
    per_image: dict = field(repr=False, default_factory=dict)  # image key -> score

    def as_dict(self) -> dict[str, float | int]:
        return {"CIDEr": self.score, "total": len(self.per_image)}


def cider_d(
    candidates: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    *,
    n: int = 4,
    sigma: float = 6.0,
) -> CiderResult:
    """CIDEr-D of one candidate caption per image against that image's references (keys must match)."""
    if set(candidates) != set(references):
        missing = sorted(map(str, set(candidates) ^ set(references)))[:5]
        raise ValueError(f"expected the same images in candidates and references; differing keys: {missing}")
    keys = list(candidates)
    if not keys:
        return CiderResult(0.0, {})
    cand_counts = {k: _ngrams(tokenize(candidates[k]), n) for k in keys}
    ref_counts = {k: [_ngrams(tokenize(r), n) for r in references[k]] for k in keys}
    df: Counter = Counter()
    for refs in ref_counts.values():
        df.update({g for counts in refs for g in counts})
    log_images = math.log(len(keys))

    def vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        for gram, tf in counts.items():
            w = tf * (log_images - math.log(max(1.0, df[gram])))
            vec[len(gram) - 1][gram] = w
            norm[len(gram) - 1] += w * w
        bigrams = sum(tf for gram, tf in counts.items() if len(gram) == 2)
        return vec, [math.sqrt(v) for v in norm], bigrams

    per_image = {}
    for k in keys:
        vec, norm, length = vector(cand_counts[k])
        total = 0.0
        for ref in ref_counts[k]:
            rvec, rnorm, rlength = vector(ref)
            penalty = math.exp(-((length - rlength) ** 2) / (2 * sigma**2))
            for order in range(n):
                dot = sum(min(w, rvec[order].get(g, 0.0)) * rvec[order].get(g, 0.0) for g, w in vec[order].items())
                if norm[order] and rnorm[order]:
                    dot /= norm[order] * rnorm[order]
                total += dot * penalty / n
        per_image[k] = 10.0 * total / len(ref_counts[k]) if ref_counts[k] else 0.0
    return CiderResult(sum(per_image.values()) / len(keys), per_image)
