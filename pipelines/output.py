"""The output folder, local or in object storage, and what `--resume` reads back from it.

    OUTPUT/predictions/part-*.parquet, _commits/   the rows (rows.parts: a part counts once its commit is written)
    OUTPUT/run.json                                the settings that decide the rows, checked by --resume
    OUTPUT/summary.json, coco_results.json, coco_dataset.json, previews/, exports/

Rows are keyed by (image_id, prompt). The driver is the only writer: it drops a key it has already written, so a
batch that Ray redoes after a replica crash cannot appear twice, and a resumed job skips every key already there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

from labeling.errors import DECODE, GENERATION, OTHER, PARSE, READ, REPLICA, TOO_LARGE
from rows import PartStore
from rows.keys import key_hashes
from rows.parts import PARTS
from storage import Location, StorageError, locate

# Outputs written before rows carried their error's kind: the kind is recovered from how each message began then.
# Only rows without an error_kind are read this way; every row written now carries its kind.
_LEGACY_PREFIXES = (
    ("cannot read file", READ),
    ("cannot decode image", DECODE),
    ("empty file", DECODE),
    ("image is ", TOO_LARGE),
    ("generation failed", GENERATION),
    ("replica died", REPLICA),
    ("cannot parse the answer", PARSE),
)


def error_kinds(table: pa.Table) -> list[str | None]:
    """Each row's error kind (None for a row without error), from its error_kind column, or for rows of older
    outputs that lack it, from its message."""
    kinds = table["error_kind"].to_pylist()
    errors = table["error"].to_pylist()
    out = []
    for kind, error in zip(kinds, errors, strict=True):
        if error is not None and kind is None:
            kind = next((k for prefix, k in _LEGACY_PREFIXES if error.startswith(prefix)), OTHER)
        out.append(kind if error is not None else None)
    return out


class OutputError(ValueError):
    """The output folder cannot be used as asked (results already there without --resume, other settings)."""


class OutputFolder:
    def __init__(self, root: str | os.PathLike | Location):
        try:
            self.root = root if isinstance(root, Location) else locate(root)
        except StorageError as e:
            raise OutputError(f"--output {root}: {e}") from e
        self.parts = PartStore(self.root.join(PARTS))
        self.ray_logs: str | None = None  # the Ray session's log folder, once a run has used Ray

    def check_writable(self) -> None:
        """A local --output that is a file, or sits under one, fails here with one line."""
        try:
            info = self.root.info()
        except StorageError as e:
            raise OutputError(f"--output {self.root.uri}: {e}") from e
        if info.type.name == "File":
            raise OutputError(f"--output {self.root.uri}: is a file, not a folder")
        if self.root.local:
            parent = self.root.path
            while not os.path.exists(parent):
                parent = os.path.dirname(parent)
            if not os.path.isdir(parent):
                raise OutputError(f"--output {self.root.uri}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise OutputError(f"--output {self.root.uri}: {parent} is not writable")

    def prepare(self, settings: dict, resume: bool) -> None:
        """Create the folder, or check a previous run's settings when resuming; drop uncommitted parts."""
        self.check_writable()
        run_json = self.root.join("run.json")
        if not resume and self.parts.parts():
            raise OutputError(
                f"--output {self.root.uri} already holds results; pass --resume or choose an empty folder"
            )
        if resume and run_json.is_file():
            before = json.loads(run_json.read_text())
            changed = sorted(k for k in settings if before.get(k) != settings[k])
            if changed:
                diff = "; ".join(f"{k}: {before.get(k)!r} then, {settings[k]!r} now" for k in changed)
                raise OutputError(f"--resume with other settings than the run in {self.root.uri} ({diff})")
        try:
            self.root.mkdir()
            self.parts.prepare()
            run_json.write_text(json.dumps(settings, indent=2))
        except OSError as e:
            raise OutputError(f"--output {self.root.uri}: cannot write there ({e})") from e

    def done_keys(self, skip_errors: Iterable[str] = ()) -> np.ndarray:
        """Sorted key hashes (rows.keys) of the rows already written; rows whose error is of one of the
        `skip_errors` kinds are left out (they are to be labeled again)."""
        skip = set(skip_errors)
        hashes = []
        for table in self.parts.iter_tables(["image_id", "prompt", "error", "error_kind"]):
            ids, prompts = table["image_id"].to_pylist(), table["prompt"].to_pylist()
            if skip:
                keep = [i for i, kind in enumerate(error_kinds(table)) if kind not in skip]
                ids, prompts = [ids[i] for i in keep], [prompts[i] for i in keep]
            hashes.append(key_hashes(ids, prompts))
        return np.unique(np.concatenate(hashes)) if hashes else np.empty(0, np.int64)

    def drop_rows_with_errors(self, kinds: Sequence[str]) -> int:
        """Rewrite the parts that hold error rows of these kinds without them; returns how many were dropped.

        Crash-safe in the only way that matters here: at no moment does a key appear twice. The new part is
        written uncommitted, the old part's commit is removed, then the new one is committed; a crash in between
        loses rows (a later --resume labels them again), never duplicates them.
        """
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from rows.schema import conform

        dropped = 0
        for part in self.parts.parts():
            with part.fs.open_input_file(part.path) as f:
                table = conform(pq.read_table(f))
            drop = [kind is not None and kind in kinds for kind in error_kinds(table)]
            if not any(drop):
                continue
            dropped += sum(drop)
            self.parts.replace(part, table.filter(pc.invert(pa.array(drop))))
        return dropped

    def write_json(self, name: str, value: object) -> str:
        loc = self.root.join(name)
        loc.write_text(json.dumps(value, ensure_ascii=False))
        return loc.uri
