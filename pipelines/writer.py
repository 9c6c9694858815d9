"""The driver's writer: rows from the pipeline into committed Parquet parts, each key once.

Rows are buffered and written as a part when rows_per_part have gathered or seconds_per_part have passed. A row
whose key was already written (by this run, or a previous one when resuming) is dropped: Ray redoes the batch of
a replica that died, and such a redo must not duplicate a row. The driver keeps one "seen" bit per expected input
(rows.keys), never the rows themselves, so its memory does not grow with the output.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from rows import PartStore
from rows.keys import KeyIndex, key_hashes


class PartWriter:
    def __init__(self, store: PartStore, expected: np.ndarray, done: np.ndarray, rows_per_part: int,
                 seconds_per_part: float, before_write=None, progress=None, timeline=None):  # fmt: skip
        """before_write: called before each part is written; raises to stop the writer (a lost output lock).
        progress: told of every row written (pipelines.console.Progress); timeline: marks the first row."""
        self.store = store
        self.before_write, self.progress, self.timeline = before_write, progress, timeline
        self.index = KeyIndex(expected)
        done_pos = self.index.positions(np.asarray(done, np.int64))
        self.index.seen[done_pos[done_pos >= 0]] = True
        self.unexpected: set[int] = set()  # keys outside the plan (should not happen; kept rather than lost)
        self.rows_per_part, self.seconds_per_part = rows_per_part, seconds_per_part
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.since = time.monotonic()
        self.rows = self.errors = self.duplicates = 0
        self.started: float | None = None  # when the pipeline started (after Ray's own start-up)
        self.written_rows = 0  # rows in committed parts by this run

    def add(self, table: pa.Table) -> int:
        hashes = key_hashes(table.column("image_id").to_pylist(), table.column("prompt").to_pylist())
        pos = self.index.positions(hashes)
        keep = []
        for i, (h, p) in enumerate(zip(hashes.tolist(), pos.tolist(), strict=True)):
            if p >= 0:
                if self.index.seen[p]:
                    self.duplicates += 1
                    continue
                self.index.seen[p] = True
            elif h in self.unexpected:
                self.duplicates += 1
                continue
            else:
                self.unexpected.add(h)
            keep.append(i)
        if len(keep) < table.num_rows:
            table = table.take(keep)
        if table.num_rows:
            self.buffer.append(table)
            self.buffered += table.num_rows
            errors = table.num_rows - table.column("error").null_count
            if self.timeline is not None:
                self.timeline.mark("first row")
            self.rows += table.num_rows
            self.errors += errors
            if self.progress is not None:
                self.progress.update(table.num_rows, errors)
        if self.buffered >= self.rows_per_part or time.monotonic() - self.since >= self.seconds_per_part:
            self.flush()
        return table.num_rows

    def flush(self) -> None:
        self.since = time.monotonic()
        if not self.buffer:
            return
        if self.before_write is not None:
            self.before_write()
        table = pa.concat_tables(self.buffer)
        self.store.write(table)
        self.buffer, self.buffered = [], 0
        self.written_rows += table.num_rows

    def missing(self) -> np.ndarray:
        """Key hashes of the planned inputs that have no row yet."""
        return self.index.missing()
