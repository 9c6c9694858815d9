"""Finding the input that kills its replica: a worker that labels a few inputs in a plain Ray actor, and the
error row written for an input the replica died on every time."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from labeling.images import prepare
from rows import error_row, rows_to_table
from tasks import Task, from_prompt


class IsolationWorker:
    """Decode + replica in one actor: `label(rows)` does for a few inputs what the pipeline's two stages do."""

    def __init__(self, replica_class: type, replica_args: dict, image_size: int, max_pixels: int):
        self.replica = replica_class(**replica_args)
        self.size, self.max_pixels = image_size, max_pixels

    def label(self, rows: list[dict]) -> pa.Table:
        prepared = [prepare(r, self.size, self.max_pixels) for r in rows]
        batch = {key: np.array([p[key] for p in prepared]) for key in prepared[0]}
        return self.replica(batch)


def death_cause(error: Exception) -> str:
    """The useful part of Ray's actor-death message: its exit type and detail when it gives them."""
    text = str(error)
    detail = re.search(r"Worker exit detail: ([^\n]*?)(?: There are some potential root causes\.|\n|$)", text)
    kind = re.search(r"Worker exit type: (\w+)", text)
    parts = []
    if kind:
        parts.append(kind.group(1))
    if detail:
        parts.append(detail.group(1).strip())
    if not parts:
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        parts.append(first)
    return "; ".join(parts)[:500]


def died_row(row: dict, tasks: list[Task], cause: str, model: str) -> pa.Table:
    known = {t.prompt(): t for t in tasks}
    task = known.get(row["prompt"]) or from_prompt(row["prompt"])
    message = f"replica died on this input every time it was tried ({cause})"
    return rows_to_table([error_row(row["image_id"], row["path"], row["prompt"], task.name, message, model)])
