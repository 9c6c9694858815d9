"""OCR metrics: character error rate, word error rate, exact match.

CER and WER are corpus-level, as speech and OCR toolkits (e.g. jiwer) report them: total edit distance over
total reference length, so a long line weighs more than a short one and one empty reference cannot divide by
zero. Text is compared after collapsing runs of whitespace (line breaks included) to one space and stripping the
ends: PaliGemma's OCR output and most references disagree on line breaks, which are layout, not reading errors.
Case and punctuation are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evals.edit_distance import edit_distance


def normalize_ocr(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class OcrResult:
    cer: float
    wer: float
    exact_match: float
    total: int

    def as_dict(self) -> dict[str, float | int]:
        return {"CER": self.cer, "WER": self.wer, "exact_match": self.exact_match, "total": self.total}


def error_rate(predictions: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """Sum of edit distances / sum of reference lengths (token sequences); the denominator is at least 1."""
    if len(predictions) != len(references):
        raise ValueError(f"expected as many references as predictions but got {len(references)} and {len(predictions)}")
    errors = sum(edit_distance(p, r) for p, r in zip(predictions, references, strict=True))
    return errors / max(1, sum(len(r) for r in references))


def cer(predictions: Sequence[str], references: Sequence[str]) -> float:
    return error_rate([normalize_ocr(p) for p in predictions], [normalize_ocr(r) for r in references])


def wer(predictions: Sequence[str], references: Sequence[str]) -> float:
    return error_rate([p.split() for p in predictions], [r.split() for r in references])


def ocr_scores(predictions: Sequence[str], references: Sequence[str]) -> OcrResult:
    """CER, WER and the fraction of exact matches (after whitespace normalization)."""
    exact = sum(normalize_ocr(p) == normalize_ocr(r) for p, r in zip(predictions, references, strict=True))
    return OcrResult(
        cer=cer(predictions, references),
        wer=wer(predictions, references),
        exact_match=exact / len(predictions) if predictions else 0.0,
        total=len(predictions),
    )
