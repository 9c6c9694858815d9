"""Model replicas: the stateful stage of the pipeline, one Ray actor per GPU (or CPU slot), loaded once.

`Replica` is the callable class given to `Dataset.map_batches`: it loads a backend (labeling.backends) in
`__init__` and turns each batch of decoded images into output rows (rows.ROW_SCHEMA) in `__call__`, through
`labeling.answers.label_batch`, the same code the web page and the single-image command use.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from rows import ROW_SCHEMA, Row, error_row, rows_to_table
from tasks import Task, from_prompt


class Replica:
    """A model replica for `map_batches`: decoded images in, output rows out.

    tasks: the job's own tasks by prompt (the driver built them from the command line); a row whose prompt is
    not among them (a manifest's own prompt) is read by `tasks.from_prompt`, as the driver read it. Rows whose
    image failed to decode pass straight through with their error.
    """

    def __init__(
        self,
        checkpoint: str,
        tasks: dict[str, Task] | None = None,
        backend: str = "native",
        device: str | None = None,
        dtype: str | None = None,
        vae: str | None = None,
        max_new_tokens: int = 64,
        model_name: str | None = None,
        threads: int | None = None,  # torch threads; -N means this machine's CPUs / N; None leaves torch's default
        object_filter=None,  # exports.ObjectFilter: thresholds and NMS applied to each row's objects
        in_flight: int | None = None,  # rows generating at once (default: what the device's memory holds)
        compile: bool = False,
        batch_size: int | None = None,  # rows per call (a Ray batch): more cannot be in flight
    ):
        import torch

        from labeling.backends import BACKENDS

        if threads and threads < 0:  # -N: share this machine's cores among N replicas
            threads = max(1, (os.cpu_count() or 1) // -threads)
        if threads:
            torch.set_num_threads(threads)
        self.backend = BACKENDS[backend](checkpoint, dtype, device, **({"compile": True} if compile else {}))
        model = getattr(self.backend, "model", None)
        if in_flight is None and hasattr(model, "new_cache"):  # ours: as many rows as the device's memory holds
            from model.generation import rows_that_fit

            in_flight = rows_that_fit(model, model.config.num_image_tokens + 32, max_new_tokens)
        if batch_size is not None and in_flight is not None:
            in_flight = min(in_flight, batch_size)
        self.in_flight = in_flight
        self.compiled = compile
        self.tasks: dict[str, Task] = dict(tasks or {})
        self.mask_decoder = None
        if vae:
            from decoders import MaskDecoder

            self.mask_decoder = MaskDecoder.from_npz(vae, device=self.backend.device)
        self.max_new_tokens = max_new_tokens
        self.model_name = model_name or Path(checkpoint).name
        self.object_filter = object_filter if object_filter is not None and object_filter.active else None
        self.warm_up()

    def warm_up(self) -> None:
        """One small generation before the first batch: loads lazy kernels and, with compile=True, compiles the
        decode step for the in-flight size, so the first real batch is not the one that waits."""
        from PIL import Image

        size = getattr(getattr(self.backend, "model", None), "image_processor", None)
        side = size.size if size is not None else 224
        n = (self.in_flight or 1) if self.compiled else 1  # a compiled step is specialized to its slot count
        self.backend.generate([Image.new("RGB", (side, side))] * n, ["caption en"] * n, max_new_tokens=2,
                              batch_size=n)  # fmt: skip

    def task_for(self, prompt: str) -> Task:
        if prompt not in self.tasks:
            self.tasks[prompt] = from_prompt(prompt)
        return self.tasks[prompt]

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        from labeling.answers import label_batch

        n = len(batch["image_id"])
        prompts = [str(p) for p in batch["prompt"]]
        rows: list[Row | None] = [None] * n
        ok = []
        for i in range(n):
            error = str(batch["error"][i])
            if error:
                task = self.task_for(prompts[i]).name
                rows[i] = error_row(batch["image_id"][i], str(batch["path"][i]), prompts[i], task, error,
                                    self.model_name)  # fmt: skip
            else:
                ok.append(i)
        if ok:
            labeled = label_batch(
                self.backend,
                [self.task_for(prompts[i]) for i in ok],
                [batch["pixels"][i] for i in ok],  # uint8 at the model's size: straight into tensors
                image_ids=[int(batch["image_id"][i]) for i in ok],
                paths=[str(batch["path"][i]) for i in ok],
                sizes=[(int(batch["width"][i]), int(batch["height"][i])) for i in ok],
                mask_decoder=self.mask_decoder,
                max_new_tokens=self.max_new_tokens,
                model_name=self.model_name,
                batch_size=self.in_flight,
            )
            for i, item in zip(ok, labeled, strict=True):
                if self.object_filter is not None and item.row["objects"]:
                    item.row["objects"] = self.object_filter(item.row["objects"])
                rows[i] = item.row
        return rows_to_table(rows)


__all__ = ["ROW_SCHEMA", "Replica"]
