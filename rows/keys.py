"""Row keys as 64-bit hashes: what the driver keeps per input instead of Python tuples.

A row is keyed by (image_id, prompt). The driver needs the keys of every input (to skip what is done, to drop a
row Ray delivers twice, to find inputs that never came back); as int64 hashes in sorted NumPy arrays they cost 8
bytes an input and a few bits for the "seen" flags, which is what keeps the driver small at millions of inputs.
Two keys share a hash with probability about n^2 / 2^65 (10^-7 at a million inputs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def key_hash(image_id: int, prompt: str) -> int:
    digest = hashlib.blake2b(f"{int(image_id)}\x00{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def key_hashes(image_ids: Sequence[int], prompts: Sequence[str]) -> np.ndarray:
    return np.fromiter((key_hash(i, p) for i, p in zip(image_ids, prompts, strict=True)), np.int64, len(image_ids))


def table_key_hashes(table, chunk: int = 65536) -> np.ndarray:
    """key_hashes of an Arrow table's image_id and prompt columns, a chunk at a time (no Python list of a
    million ids and prompts at once)."""
    out = np.empty(table.num_rows, np.int64)
    for start in range(0, table.num_rows, chunk):
        part = table.slice(start, chunk)
        out[start : start + part.num_rows] = key_hashes(part["image_id"].to_pylist(), part["prompt"].to_pylist())
    return out


class KeyIndex:
    """The expected keys of a run (sorted, unique) and which of them have been written."""

    def __init__(self, hashes: np.ndarray):
        self.keys = np.unique(hashes)
        self.seen = np.zeros(len(self.keys), dtype=bool)

    def positions(self, hashes: np.ndarray) -> np.ndarray:
        """Index of each hash in `keys`, or -1 for a hash that is not expected."""
        pos = np.searchsorted(self.keys, hashes)
        pos = np.minimum(pos, max(len(self.keys) - 1, 0))
        found = (len(self.keys) > 0) & (self.keys[pos] == hashes) if len(self.keys) else np.zeros(len(hashes), bool)
        return np.where(found, pos, -1)

    def missing(self) -> np.ndarray:
        return self.keys[~self.seen]
