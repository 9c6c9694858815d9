"""Text answers in rows: what trails an answer in the raw generated text (a row's `text`) and is not part of it.

generate keeps special tokens in its text (a detection answer is written in them), so a text answer may end with
`<eos>`, `<pad>` or Gemma's `<end_of_turn>`, with spaces around them.
"""

from __future__ import annotations

import re

_END_TOKENS = re.compile(r"(?:\s*(?:<eos>|<pad>|<end_of_turn>))+\s*$")


def strip_end_tokens(raw: str | None) -> str:
    """The raw text without trailing end-of-text tokens (inner text, leading spaces included, untouched)."""
    if raw is None:
        return ""
    end = _END_TOKENS.search(raw)
    return raw[: end.start()] if end else raw


def answer_text(raw: str | None) -> str:
    """A row's text answer as scores compare it: end tokens and outer whitespace removed."""
    return strip_end_tokens(raw).strip()
