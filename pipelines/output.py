"""The output folder: Parquet part files written atomically by one writer, and what `--resume` reads back.

    OUTPUT/predictions/part-<run>-<n>.parquet   the rows (DESIGN.md §7); read the folder as one Parquet dataset
    OUTPUT/run.json                             the settings that decide the rows, checked by --resume
    OUTPUT/summary.json, coco_results.json, coco_dataset.json, previews/

A part is written under a hidden temporary name and renamed when complete, so a killed job leaves whole parts
or nothing (Parquet readers skip names starting with "."). Rows are keyed by (image_id, prompt); the writer drops
a key it has already written, so a batch that Ray redoes after a replica crash cannot appear twice, and a resumed
job skips every key already on disk.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.replica import ROW_SCHEMA

PARTS = "predictions"


class OutputError(ValueError):
    """The output folder cannot be used as asked (results already there without --resume, other settings)."""


class OutputFolder:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self.parts = self.root / PARTS
        self.run_id = f"{os.getpid():x}{uuid.uuid4().hex[:6]}"
        self.written_parts = 0

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []

    def prepare(self, settings: dict, resume: bool) -> None:
        """Create the folder, or check a previous run's settings when resuming; remove half-written parts."""
        run_json = self.root / "run.json"
        if self.part_files() and not resume:
            raise OutputError(f"--output {self.root} already holds results; pass --resume or choose an empty folder")
        if resume and run_json.is_file():
            before = json.loads(run_json.read_text())
            changed = sorted(k for k in settings if before.get(k) != settings[k])
            if changed:
                diff = "; ".join(f"{k}: {before.get(k)!r} then, {settings[k]!r} now" for k in changed)
                raise OutputError(f"--resume with other settings than the run in {self.root} ({diff})")
        self.parts.mkdir(parents=True, exist_ok=True)
        for stale in self.parts.glob(".part-*.tmp"):
            stale.unlink()
        _atomic_write_text(run_json, json.dumps(settings, indent=2))

    def done_keys(self) -> set[tuple[int, str]]:
        """(image_id, prompt) of every row already written."""
        keys: set[tuple[int, str]] = set()
        for part in self.part_files():
            t = pq.read_table(part, columns=["image_id", "prompt"])
            keys.update(zip(t.column("image_id").to_pylist(), t.column("prompt").to_pylist(), strict=True))
        return keys

    def write_part(self, table: pa.Table) -> Path:
        name = f"part-{self.run_id}-{self.written_parts:05d}.parquet"
        tmp = self.parts / f".{name}.tmp"
        pq.write_table(table.cast(ROW_SCHEMA), tmp)
        final = self.parts / name
        os.replace(tmp, final)  # atomic on POSIX filesystems
        self.written_parts += 1
        return final

    def read_rows(self) -> pa.Table:
        parts = self.part_files()
        if not parts:
            return ROW_SCHEMA.empty_table()
        return pa.concat_tables([pq.read_table(p, schema=ROW_SCHEMA) for p in parts])

    def write_json(self, name: str, value: object) -> Path:
        path = self.root / name
        _atomic_write_text(path, json.dumps(value, ensure_ascii=False))
        return path


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
