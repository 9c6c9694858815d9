"""The kinds of error a row can carry, and which ones a retry can fix. Each error row is made with its kind
(rows.error_row(..., kind)), stored in the row's `error_kind` column, so choosing what to retry never depends
on the wording of a message.

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

READ, DECODE, TOO_LARGE, GENERATION, REPLICA, PARSE = "read", "decode", "too-large", "generation", "replica", "parse"
KINDS = (READ, DECODE, TOO_LARGE, GENERATION, REPLICA, PARSE)
# An error row of an output written before rows carried their kind, whose message matches none of ours.
OTHER = "other"
RETRIED_BY_DEFAULT = (READ, GENERATION, REPLICA)


def parse_kinds(text: str) -> tuple[str, ...]:
    """--retry-errors' value: "default", "all", or kinds separated by commas."""
    if text in ("", "default"):
        return RETRIED_BY_DEFAULT
    if text == "all":
        return (*KINDS, OTHER)
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"--retry-errors: unknown kind {', '.join(unknown)}; kinds are {', '.join(KINDS)}")
    return kinds
