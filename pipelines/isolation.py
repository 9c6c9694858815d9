"""Finding the input that kills its replica.

Inputs whose batches never came back from the pipeline (their batch killed the replica every time Ray redid it)
are labeled again in one plain Ray actor, a worker that decodes and labels a few inputs at a time, restarted
after each death. A batch that kills it is halved, and the halves retried, until the input that kills it is
alone; that input is written as an error row (kind "replica") and every other input is labeled. A plain actor
rather than Ray Data, to see which call died and why.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from labeling.errors import REPLICA
from labeling.images import prepare
from pipelines.writer import PartWriter
from rows import error_row, rows_to_table
from tasks import TaskLookup


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


def died_row(row: dict, task_for: TaskLookup, cause: str, model: str) -> pa.Table:
    """The error row of an input the replica died on every time it was tried."""
    message = f"replica died on this input every time it was tried ({cause})"
    return rows_to_table([error_row(row["image_id"], row["path"], row["prompt"], task_for(row["prompt"]).name,
                                    message, REPLICA, model)])  # fmt: skip


def isolate_poison(rows: list[dict], make_worker: Callable[[], object], writer: PartWriter, batch_size: int,
                   retries: int, died: Callable[[dict, str], pa.Table], log) -> int:  # fmt: skip
    """Label `rows`, halving a batch each time its worker dies, so that the input that kills it ends up alone
    and is written as the error row `died(row, cause)` after `retries` more deaths; returns how many inputs were
    set aside. make_worker: a new worker actor (the previous one is dead)."""
    import ray

    log(f"{len(rows)} input(s) did not come back from the replicas; retrying them in smaller batches")
    queue: list[tuple[list[dict], int]] = [(rows[i : i + batch_size], 0) for i in range(0, len(rows), batch_size)]
    worker, isolated = None, 0
    while queue:
        batch, deaths = queue.pop(0)
        worker = worker or make_worker()
        try:
            writer.add(ray.get(worker.label.remote(batch)))
            continue
        except ray.exceptions.RayActorError as e:
            cause, worker = death_cause(e), None
        if len(batch) > 1:
            half = len(batch) // 2
            queue[:0] = [(batch[:half], 0), (batch[half:], 0)]
        elif deaths < retries:
            queue.insert(0, (batch, deaths + 1))
        else:
            row = batch[0]
            log(f"set aside: image {row['image_id']} ({row['path']}), prompt {row['prompt']!r}: the replica died "
                f"on it {deaths + 1} time(s)")  # fmt: skip
            writer.add(died(row, cause))
            isolated += 1
    writer.flush()
    return isolated
