"""Text answers in rows: a row's `text` is the raw generated text, special tokens kept (object answers are written
in them), so a text answer is read without the end tokens that trail it (decoders.strip_end_tokens)."""

from __future__ import annotations

from decoders import strip_end_tokens


def answer_text(raw: str | None) -> str:
    """A row's text answer as scores compare it: end tokens and outer whitespace removed."""
    return strip_end_tokens(raw).strip()


__all__ = ["answer_text", "strip_end_tokens"]
