"""Model replicas: the stateful stage of the pipeline, one Ray actor per GPU (or CPU slot), loaded once.

`Replica` is the callable class given to `Dataset.map_batches`: it loads a backend (labeling.backends) from its
ReplicaSpec in `__init__` and turns each batch of decoded images into output rows (rows.ROW_SCHEMA) in
`__call__`, through `labeling.label_batch`, the same code the web page and the single-image command use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from labeling.filters import ObjectFilter
from rows import Row, error_row, rows_to_table
from specs.label import ReplicaSpec
from tasks import Task, TaskLookup


def torch_threads(threads: int | None) -> int | None:
    """torch threads for a replica: as given; -N shares this machine's CPUs among N replicas; None: torch's own."""
    if threads and threads < 0:
        return max(1, (os.cpu_count() or 1) // -threads)
    return threads


class Replica:
    """A model replica for `map_batches`: decoded images in, output rows out.

    tasks: the job's own tasks (the driver built them from the command line); a row whose prompt is not among
    them (a manifest's own prompt) is read by `tasks.from_prompt`, as the driver read it. Rows whose image failed
    to decode pass straight through with their error. threads: torch threads (see torch_threads).
    """

    def __init__(self, spec: ReplicaSpec, tasks: Sequence[Task] = (), object_filter: ObjectFilter | None = None,
                 threads: int | None = None, tiles=None):  # fmt: skip
        import torch

        from labeling.backends import BACKENDS

        if torch_threads(threads):
            torch.set_num_threads(torch_threads(threads))
        options = {"compile": True} if spec.compile else {}
        self.backend = BACKENDS[spec.backend](spec.checkpoint, spec.dtype, spec.device, adapter=spec.adapter,
                                              **options)  # fmt: skip
        self.image_size = self.backend.image_size  # the square the model sees: tiles are squashed to it
        self.in_flight = self._in_flight(spec)
        self.spec = spec
        self.task_for = TaskLookup(tasks)
        self.mask_decoder = None
        if spec.vae:
            from decoders import MaskDecoder

            self.mask_decoder = MaskDecoder.from_npz(spec.vae, device=self.backend.device)
        self.model_name = Path(spec.checkpoint).name
        self.object_filter = object_filter if object_filter is not None and object_filter.active else None
        self.tiles = tiles  # a labeling.tiles.TileConfig: batches hold whole images (rgb) to cut into tiles
        self.warm_up()

    def _in_flight(self, spec: ReplicaSpec) -> int | None:
        """Rows generating at once: as asked, or (ours) as many as the device's memory holds; at most a batch."""
        in_flight = spec.in_flight
        model = getattr(self.backend, "model", None)
        if in_flight is None and hasattr(model, "new_cache"):
            from model.generation import rows_that_fit

            in_flight = rows_that_fit(model, model.config.num_image_tokens + 32, spec.max_new_tokens)
        return in_flight if in_flight is None else min(in_flight, spec.batch_size)

    def warm_up(self) -> None:
        """One small generation before the first batch: loads lazy kernels and, with compile, compiles the
        decode step for the in-flight size, so the first real batch is not the one that waits."""
        from PIL import Image

        side = self.image_size
        n = (self.in_flight or 1) if self.spec.compile else 1  # a compiled step is specialized to its slot count
        self.backend.generate([Image.new("RGB", (side, side))] * n, ["caption en"] * n, max_new_tokens=2,
                              batch_size=n)  # fmt: skip

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:

        n = len(batch["image_id"])
        prompts = [str(p) for p in batch["prompt"]]
        rows: list[Row | None] = [None] * n
        ok = []
        for i in range(n):
            if str(batch["error"][i]):
                rows[i] = error_row(batch["image_id"][i], str(batch["path"][i]), prompts[i],
                                    self.task_for(prompts[i]).name, str(batch["error"][i]),
                                    str(batch["error_kind"][i]), self.model_name)  # fmt: skip
            else:
                ok.append(i)
        for i, row in zip(ok, self._label(batch, ok, prompts) if ok else [], strict=True):
            if self.object_filter is not None and row["objects"]:
                row["objects"] = self.object_filter(row["objects"])
            rows[i] = row
        return rows_to_table(rows)

    def _label(self, batch: dict[str, np.ndarray], ok: list[int], prompts: list[str]) -> list[Row]:
        """The rows of the decoded inputs `ok`: whole images at the model's size, or (tiled) cut into tiles."""
        from labeling import label_batch

        common = {"image_ids": [int(batch["image_id"][i]) for i in ok], "paths": [str(batch["path"][i]) for i in ok],
                  "mask_decoder": self.mask_decoder, "max_new_tokens": self.spec.max_new_tokens,
                  "model_name": self.model_name, "batch_size": self.in_flight}  # fmt: skip
        tasks = [self.task_for(prompts[i]) for i in ok]
        if self.tiles is not None:
            from labeling.tiled import label_tiled

            images = {}  # one array per image, shared by its prompts (their tiles go through the tower once)
            for i in ok:
                key = int(batch["image_id"][i])
                if key not in images:
                    shape = (int(batch["height"][i]), int(batch["width"][i]), 3)
                    images[key] = np.frombuffer(batch["rgb"][i], dtype=np.uint8).reshape(shape)
            arrays = [images[int(batch["image_id"][i])] for i in ok]
            return label_tiled(self.backend, tasks, arrays, self.tiles, self.image_size, **common)
        labeled = label_batch(
            self.backend,
            tasks,
            [batch["pixels"][i] for i in ok],  # uint8 at the model's size: straight into tensors
            sizes=[(int(batch["width"][i]), int(batch["height"][i])) for i in ok],
            **common,
        )
        return [item.row for item in labeled]
