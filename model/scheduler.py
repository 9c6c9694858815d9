"""Which requests run: a waiting queue, cache slots handed out in groups, prefills grouped by prompt length.

Policy only, in plain Python: the scheduler never sees a tensor, so every rule here is unit-tested without a model
(tests/model/test_scheduler.py). The runner (model/runner.py) does what it decides; generation.py turns the two
into the loop schedule -> run -> postprocess, as nano-vllm's engine does.

- **Admission**: waiting requests take free slots once a quarter of the slots are free, or when nothing runs, or
  when every waiting request fits now. A prefill of many rows costs little more than one (its matrix products are
  large either way), while a row admitted alone makes the others wait one whole prefill for one new row.
- **Prefill groups**: the admitted requests, sorted by prompt length, are cut into groups run as one right-padded
  prefill each; a group ends before its padding would pass a quarter of the longest prompt, or its tokens pass
  `prefill_tokens` (a bound on activation memory: a 896-px prompt is about 4,100 tokens).
- **Images**: a distinct image is encoded once, when its first request is admitted, and its features are let go
  when its last request has been prefilled.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

from .sequence import Sequence, Status

# A prefill runs at most this many tokens at once (rows x prompt length): enough for full matrix products, and a
# bound on activation memory however many rows are admitted together.
PREFILL_TOKENS = 16384
# Finished rows' slots are refilled once this share of the slots is free (or nothing else waits): measured on the
# mixed workload, half took 1.06 times as long and all 1.6 times as long as a quarter (docs/PERFORMANCE.md).
ADMIT_FREE = 0.25


@dataclass(frozen=True)
class Admission:
    """What one admission asks the runner to do, in order: encode `new_images` (distinct images no running
    request holds yet), then prefill each group (sequences of similar prompt length, already given their slots)."""

    new_images: tuple[int, ...]
    groups: tuple[tuple[Sequence, ...], ...]


def prefill_groups(sequences: Iterable[Sequence], prefill_tokens: int = PREFILL_TOKENS) -> list[list[Sequence]]:
    """Sequences sorted by prompt length (stable) and cut into prefill groups: a group ends before a member would
    make its padding exceed a quarter of its longest prompt (shortest < 3/4 of longest), or its padded tokens
    (members x longest) exceed `prefill_tokens`. A prompt longer than `prefill_tokens` runs alone."""
    groups: list[list[Sequence]] = []
    part: list[Sequence] = []
    for seq in sorted(sequences, key=lambda s: s.prompt_len):
        longest = seq.prompt_len
        if part and (longest * (len(part) + 1) > prefill_tokens or 4 * part[0].prompt_len < 3 * longest):
            groups.append(part)
            part = []
        part.append(seq)
    if part:
        groups.append(part)
    return groups


class Scheduler:
    """The waiting queue and the slots of one generate call: requests wait in the order they are added.

    slots: cache rows in flight. prefill_tokens, admit_free: the rules above.
    """

    def __init__(self, slots: int, prefill_tokens: int = PREFILL_TOKENS, admit_free: float = ADMIT_FREE):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self.prefill_tokens = prefill_tokens
        self.admit_free = admit_free
        self.sequences: list[Sequence] = []  # every request added, in order
        self.waiting: deque[Sequence] = deque()
        self.running: dict[int, Sequence] = {}  # slot -> the sequence holding it
        self.uses_left: Counter[int] = Counter()  # requests of each image not prefilled yet
        self.held: set[int] = set()  # images whose features are kept for requests still to prefill

    def add(self, seq: Sequence) -> None:
        """Queue a request (WAITING) behind the others."""
        seq.status, seq.slot = Status.WAITING, None
        self.sequences.append(seq)
        self.waiting.append(seq)
        self.uses_left[seq.image] += 1

    @property
    def free_slots(self) -> list[int]:
        """Free slots, lowest first (a finished row's slot is the next one handed out)."""
        return [s for s in range(self.slots) if s not in self.running]

    @property
    def done(self) -> bool:
        """Nothing waits and nothing runs."""
        return not self.waiting and not self.running

    def should_admit(self) -> bool:
        """Admit now? Only into free slots, and in groups: once `admit_free` of the slots are free, unless nothing
        runs (a free slot decodes nothing) or every waiting request fits now (no bigger group will come)."""
        free = self.slots - len(self.running)
        if not self.waiting or not free:
            return False
        return not self.running or free >= self.admit_free * self.slots or len(self.waiting) <= free

    def admit(self) -> Admission | None:
        """Give waiting requests (in queue order) the free slots (lowest first); None when `should_admit` says no.
        The admitted sequences are RUNNING from here on; their prefill is the runner's to do."""
        if not self.should_admit():
            return None
        free = self.free_slots
        taken = [self.waiting.popleft() for _ in range(min(len(free), len(self.waiting)))]
        for seq, slot in zip(taken, free, strict=False):
            seq.slot, seq.status = slot, Status.RUNNING
            self.running[slot] = seq
        new_images = tuple(sorted({s.image for s in taken} - self.held))
        self.held.update(new_images)
        groups = prefill_groups(taken, self.prefill_tokens)
        return Admission(new_images=new_images, groups=tuple(tuple(g) for g in groups))

    def prefilled(self, group: Iterable[Sequence]) -> list[int]:
        """Note that a group's prefill ran; returns the images no request needs any more (their features can go)."""
        released = []
        for seq in group:
            self.uses_left[seq.image] -= 1
            if self.uses_left[seq.image] == 0:
                self.held.discard(seq.image)
                released.append(seq.image)
        return released

    def finish(self, slot: int, token_ids: list[int], logprobs: list[float], stopped_at_eos: bool) -> Sequence:
        """The row in `slot` is done: store its answer, free its slot, and return its sequence."""
        seq = self.running.pop(slot)
        seq.token_ids, seq.logprobs, seq.stopped_at_eos = token_ids, logprobs, stopped_at_eos
        seq.slot, seq.status = None, Status.FINISHED
        return seq

    def results(self) -> list[Sequence]:
        """Every sequence, in the order added (call once `done`)."""
        if not self.done:
            raise RuntimeError(f"{len(self.waiting)} requests wait and {len(self.running)} run")
        return list(self.sequences)
