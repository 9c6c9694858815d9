"""Training batches made ahead of time in a separate process, so drawing and encoding data overlaps the step.

The worker builds its own BatchMaker from a picklable factory and puts batches for steps start, start + 1, ...
on a bounded queue; tensors travel through shared memory (torch.multiprocessing), not pickled copies. Because a
batch is a pure function of its step (training.data.BatchMaker), the batches are exactly those the training
process would have made itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.multiprocessing as mp

from .data import Batch, BatchMaker


def _work(factory: Callable[[], BatchMaker], start: int, queue) -> None:
    torch.set_num_threads(1)
    maker = factory()
    step = start
    while True:
        try:
            queue.put((step, maker.batch(step), None))
        except Exception as e:  # noqa: BLE001 - reported to the training process, which raises it
            queue.put((step, None, f"{type(e).__name__}: {e}"))
            return
        step += 1


class Prefetcher:
    """Batches for steps start, start + 1, ... from a background process; `get(step)` in order."""

    def __init__(self, factory: Callable[[], BatchMaker], start: int, ahead: int = 3):
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue(maxsize=ahead)
        self.process = ctx.Process(target=_work, args=(factory, start, self.queue), daemon=True)
        self.process.start()

    def get(self, step: int) -> Batch:
        got, batch, error = self.queue.get(timeout=600)
        if error is not None:
            raise RuntimeError(f"the data process failed at step {got}: {error}")
        if got != step:
            raise RuntimeError(f"the data process sent step {got} when step {step} was expected")
        return batch

    def close(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=10)
