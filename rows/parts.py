"""Rows on disk or in a bucket: Parquet part files, each made visible by a commit record written after it.

    OUTPUT/predictions/part-<run>-<n>.parquet        rows, ROW_SCHEMA; <run> is unique per attempt
    OUTPUT/predictions/_commits/part-<run>-<n>.json  {"rows": N}: written last, it makes the part count

A part counts only once its commit record exists. A writer that dies between the two leaves a part without a
record; readers skip it and the next writer (a `--resume`) deletes it, so its rows are labeled again exactly once.
Names under `_commits` start with "_", which Parquet dataset readers (pyarrow, pandas, Spark, Ray Data) skip, so
the folder also reads as a plain Parquet dataset. Folders written before commit records existed (parts, no
`_commits`) are read as they are: every part there was written whole (hidden name, then rename).
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from rows.schema import Row, conform
from storage import Location, locate

PARTS = "predictions"
COMMITS = "_commits"


class PartStore:
    """The parts folder of one output location (local path or URI)."""

    def __init__(self, folder: str | os.PathLike | Location):
        self.folder = folder if isinstance(folder, Location) else locate(folder)
        self.commits = self.folder.join(COMMITS)
        self.run_id = f"{os.getpid():x}{uuid.uuid4().hex[:8]}"
        self.written = 0

    # ---- reading -----------------------------------------------------------------------------------------------

    def _all_parts(self) -> list[Location]:
        return [
            self.folder.child(i)
            for i in self.folder.list()
            if i.base_name.startswith("part-") and i.base_name.endswith(".parquet")
        ]

    def _committed_names(self) -> set[str] | None:
        """Names of committed parts; None for a folder without commit records (written before they existed)."""
        infos = list(self.commits.list())
        if not infos and not self.commits.exists():
            return None
        return {i.base_name.removesuffix(".json") for i in infos if i.base_name.endswith(".json")}

    def parts(self) -> list[Location]:
        """The committed parts, in name order."""
        parts = self._all_parts()
        committed = self._committed_names()
        return parts if committed is None else [p for p in parts if p.name in committed]

    def uncommitted(self) -> list[Location]:
        committed = self._committed_names()
        return [] if committed is None else [p for p in self._all_parts() if p.name not in committed]

    def iter_tables(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """Committed parts one at a time (memory holds one part, never the whole output)."""
        wanted = None if columns is None else list(columns)
        for part in self.parts():
            with part.fs.open_input_file(part.path) as f:
                present = pq.ParquetFile(f).schema_arrow.names
                table = pq.read_table(f, columns=None if wanted is None else [c for c in wanted if c in present])
            table = conform(table)  # older parts lack newer columns: nulls
            yield table if wanted is None else table.select(wanted)

    def iter_rows(self, columns: Sequence[str] | None = None) -> Iterator[Row]:
        for table in self.iter_tables(columns):
            for batch in table.to_batches(max_chunksize=4096):
                yield from batch.to_pylist()

    def row_keys(self) -> set[tuple[int, str]]:
        """(image_id, prompt) of every committed row."""
        keys: set[tuple[int, str]] = set()
        for table in self.iter_tables(["image_id", "prompt"]):
            keys.update(zip(table.column("image_id").to_pylist(), table.column("prompt").to_pylist(), strict=True))
        return keys

    def count(self) -> int:
        total = 0
        for part in self.parts():
            with part.fs.open_input_file(part.path) as f:
                total += pq.ParquetFile(f).metadata.num_rows
        return total

    def tally(self) -> tuple[int, int]:
        """(committed rows, those whose error is set), in one pass that reads the error column only."""
        rows = errors = 0
        for table in self.iter_tables(["error"]):
            rows += table.num_rows
            errors += table.num_rows - table.column("error").null_count
        return rows, errors

    # ---- writing -----------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the folder, delete parts a dead writer left uncommitted, and start keeping commit records."""
        self.folder.mkdir()
        committed = self._committed_names()
        for part in self.uncommitted():
            part.delete()
        if committed is None:  # an older folder: its parts were whole, record them as committed
            for part in self._all_parts():
                self._commit(part.name, None)
        self.commits.mkdir()

    def write(self, table: pa.Table, commit: bool = True) -> Location:
        """Write one part and then its commit record; returns the part's location."""
        name = f"part-{self.run_id}-{self.written:05d}.parquet"
        part = self.folder.join(name)
        buffer = io.BytesIO()
        pq.write_table(conform(table), buffer)
        part.write_bytes(buffer.getvalue())
        self.written += 1
        if commit:
            self._commit(name, table.num_rows)
        return part

    def _commit(self, name: str, rows: int | None) -> None:
        self.commits.join(f"{name}.json").write_text(json.dumps({"rows": rows}))

    def replace(self, old: Location, table: pa.Table) -> None:
        """Put `table` in place of the committed part `old`, so that no key is ever visible twice: the new part is
        written uncommitted, the old commit removed, the new one committed, the old file deleted. A crash between
        those steps loses the part's rows (a later run labels them again) rather than duplicating them."""
        new = self.write(table, commit=False) if table.num_rows else None
        self.commits.join(f"{old.name}.json").delete()
        if new is not None:
            self._commit(new.name, table.num_rows)
        old.delete()


def find_parts(location: str | os.PathLike) -> list[Location]:
    """Committed Parquet parts of an output folder, its predictions folder, any folder of Parquet files
    (searched recursively, hidden and "_" names skipped) or a single .parquet file."""
    loc = locate(location)
    if loc.is_file():
        return [loc]
    if loc.join(PARTS).is_dir():
        loc = loc.join(PARTS)
    if loc.join(COMMITS).is_dir():
        return PartStore(loc).parts()
    hidden = (".", "_")
    found = []
    for info in loc.list(recursive=True):
        rel = info.path[len(loc.path.rstrip("/")) :].lstrip("/")
        if info.base_name.endswith(".parquet") and not any(p.startswith(hidden) for p in rel.split("/")):
            found.append(loc.child(info))
    return found


def iter_rows(location: str | os.PathLike, columns: Sequence[str] | None = None) -> Iterator[dict]:
    """Every row under `location` (see find_parts), one part in memory at a time."""
    parts = find_parts(location)
    if not parts:
        raise FileNotFoundError(f"no .parquet files under {location}")
    for part in parts:
        with part.fs.open_input_file(part.path) as f:
            table = pq.read_table(f, columns=list(columns) if columns else None)
        if columns is None and "image_id" in table.column_names and "error" in table.column_names:
            table = conform(table)  # a label run's rows, from any version
        for batch in table.to_batches(max_chunksize=4096):
            yield from batch.to_pylist()


def read_rows(location: str | os.PathLike) -> list[dict]:
    """All rows under `location` as dicts: for evaluation sets and tests; jobs stream with iter_rows."""
    return list(iter_rows(location))
