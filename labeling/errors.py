"""The kinds of error a row can carry, recognized by the start of its message, and which ones a retry can fix.

    read        the file could not be read (a network share or bucket that failed for a moment)
    decode      the bytes are not an image Pillow reads, or the file is empty
    too-large   more pixels than --max-pixels
    generation  the model raised for this input alone
    replica     the replica process died on this input every time it was tried (out of memory, a crash)
    parse       the answer could not be read (a bug: the text is kept in the row)

`--resume --retry-errors` labels again the rows whose error is of a retryable kind: read, generation and replica
by default (they may pass another time); decode, too-large and parse errors would fail again the same way.
"""

from __future__ import annotations

KINDS = ("read", "decode", "too-large", "generation", "replica", "parse")
RETRIED_BY_DEFAULT = ("read", "generation", "replica")

_PREFIXES = (
    ("cannot read file", "read"),
    ("cannot decode image", "decode"),
    ("empty file", "decode"),
    ("image is ", "too-large"),
    ("generation failed", "generation"),
    ("replica died", "replica"),
    ("cannot parse the answer", "parse"),
)


def error_kind(message: str) -> str:
    """The kind of an error message (see the module docstring); "other" for a message none of ours starts with."""
    for prefix, kind in _PREFIXES:
        if message.startswith(prefix):
            return kind
    return "other"


def parse_kinds(text: str) -> tuple[str, ...]:
    """--retry-errors' value: "default", "all", or kinds separated by commas."""
    if text in ("", "default"):
        return RETRIED_BY_DEFAULT
    if text == "all":
        return (*KINDS, "other")
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"--retry-errors: unknown kind {', '.join(unknown)}; kinds are {', '.join(KINDS)}")
    return kinds
