"""One request of a generate call: its prompt, its image, the cache slot it holds, and what it has produced.

A `Sequence` is plain Python (no tensors), so the scheduler that moves it from waiting to running to finished can
be read and tested without a model. The tokens it generates live on the device while it runs (the runner's slot
state) and are copied here once, when it finishes: reading them every step would make the host wait for the
device.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    """Where a sequence is: waiting for a slot, holding one (prefilled, decoding), or done."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One (image, prompt) pair of a generate call.

    index: its place among the call's pairs (results come back in this order, whatever order rows finish in).
    prompt_ids: the prompt's token ids, <image> placeholders included.
    image: the index of its distinct image; pairs that share a picture share its pass through the vision tower.
    slot: the cache row it holds while running, None otherwise.
    token_ids, logprobs: what it generated (filled when it finishes), <eos> included when it stopped at one.
    """

    index: int
    prompt_ids: list[int]
    image: int
    slot: int | None = None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stopped_at_eos: bool = False
    status: Status = Status.WAITING

    @property
    def prompt_len(self) -> int:
        """Tokens of the prompt, image placeholders included."""
        return len(self.prompt_ids)
