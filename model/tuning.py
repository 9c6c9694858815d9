"""Measure, then choose: the runner's choices are timed on the machine it runs on, never assumed.

Which weight layout reads fastest in a decode step's small matrix products, whether the compiled step beats the
eager one, and how many threads a step should use all depend on the processor (one Intel Xeon ran the compiled
step 1.3 times faster, an AMD EPYC 1.15 times slower; column-major weights won on the first and lost on the
second) and on what else the machine is doing (a step of a few milliseconds on two threads, one of whose cores is
busy with other work, waits for that core at every parallel region). So at warm-up the runner times a few calls
of each candidate and keeps the fastest. Every candidate computes the same values (same weights, same
operations; only memory layout, kernels and thread count differ), so the choice changes speed, not answers.

The choice itself is a pure function of the timings (`choose`), so that it can be tested with fixed timings: the
first candidate is the reference (row-major weights, eager step, every thread: what transformers does), and
another is kept only when its best call beats the reference's by `MARGIN`, so noise alone does not move it.

Each candidate is judged by its fastest call, not its median: other work on the machine only ever adds time, and
a load that passes during the few calls of warm-up would otherwise fix a wrong choice for the whole run (on a
shared two-core machine, prefills on two threads once measured slower than on one that way, and the batches
that followed took 2.93 s instead of 2.00 s). A load that lasts through every call of a candidate still counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

# A candidate must be this much faster than the reference (by its best call) to be kept.
MARGIN = 0.03
# Timing budget per candidate: calls are timed while under BUDGET_S (at most MAX_CALLS); at least MIN_CALLS of
# them while under LONG_S, and always at least one (a 3B model's CPU step takes seconds: one call then).
MIN_CALLS, MAX_CALLS, BUDGET_S, LONG_S = 3, 9, 0.075, 0.5


def choose(timings: Mapping[K, Sequence[float]], margin: float = MARGIN) -> K:
    """The candidate to keep: the fastest by its best call, if it beats the first candidate (the reference) by
    `margin`; the reference otherwise. Ties go to the earlier candidate. Deterministic given the timings."""
    if not timings:
        raise ValueError("nothing to choose from")
    fastest = {k: min(v) for k, v in timings.items()}
    reference = next(iter(fastest))
    best = min(fastest, key=lambda k: fastest[k])  # min keeps the first of equal values
    return best if fastest[best] < (1 - margin) * fastest[reference] else reference


def thread_options(threads: int) -> tuple[int, ...]:
    """Thread counts worth timing for a decode step: all of them first (the reference), then half, then one
    (a step is a few milliseconds of memory-bound work; fewer threads can win when cores are busy elsewhere)."""
    return tuple(dict.fromkeys((threads, max(1, threads // 2), 1)))


def time_candidates(
    fns: Mapping[K, Callable[[], object]],
    sync: Callable[[], None],
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[K, list[float]]:
    """Seconds of a few calls of each candidate after `warmup` untimed ones, timed in rounds (one call of each
    candidate per round, in order), so that a load that comes and goes on a shared machine falls on all of them
    alike. Rounds go on as MIN_CALLS, MAX_CALLS, BUDGET_S and LONG_S say of the slowest candidate."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[K, list[float]] = {k: [] for k in fns}

    def more() -> bool:
        rounds = len(next(iter(times.values())))
        spent = max(sum(t) for t in times.values())
        if not rounds:
            return True
        return rounds < MAX_CALLS and (spent < BUDGET_S or (rounds < MIN_CALLS and spent < LONG_S))

    while more():
        for k, fn in fns.items():
            start = clock()
            fn()
            sync()
            times[k].append(clock() - start)
    return times


def time_calls(
    fn: Callable[[], object], sync: Callable[[], None], warmup: int = 1, clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    """Seconds of a few calls of one function (time_candidates with a single candidate)."""
    return time_candidates({0: fn}, sync, warmup, clock)[0]


@dataclass(frozen=True)
class StepOption:
    """How a decode step runs: compiled or eager, on how many threads."""

    compiled: bool
    threads: int

    def __str__(self) -> str:
        return f"{'compiled' if self.compiled else 'eager'}, {self.threads} thread{'s' if self.threads > 1 else ''}"


@dataclass(frozen=True)
class Choice:
    """What the runner chose for one (slots, cache length) bucket, with the timings (best call, ms) it chose
    from."""

    slots: int
    length: int
    layout: str
    step: StepOption
    layout_ms: dict[str, float] = field(default_factory=dict)  # whole eager steps by "layout, threads"
    step_ms: dict[str, float] = field(default_factory=dict)  # steps by StepOption, on the chosen layout
    compile_s: float | None = None
    prefill_threads: int = 1  # threads of prefills and the vision tower (chosen once per runner)
    prefill_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain data for JSON (jobs.bench --json)."""
        return {
            "slots": self.slots,
            "length": self.length,
            "layout": self.layout,
            "compiled": self.step.compiled,
            "threads": self.step.threads,
            "layout_ms": self.layout_ms,
            "step_ms": self.step_ms,
            "compile_s": None if self.compile_s is None else round(self.compile_s, 4),
            "prefill_threads": self.prefill_threads,
            "prefill_ms": self.prefill_ms,
        }

    def describe(self) -> str:
        """One line for the log."""
        timed = ", ".join(f"{k} {v:.2f} ms" for k, v in self.step_ms.items())
        layouts = ", ".join(f"{k} {v:.2f} ms" for k, v in self.layout_ms.items())
        text = f"{self.slots} slots x {self.length} positions: {self.layout} weights, {self.step} step, "
        text += f"prefill on {self.prefill_threads} (steps: {timed}"
        return text + (f"; steps by layout: {layouts})" if layouts else ")")


def best_ms(timings: Mapping[object, Sequence[float]]) -> dict[str, float]:
    """Each candidate's fastest call in milliseconds, by the candidate's name, rounded for reading (what
    `choose` compared)."""
    return {str(k): round(1e3 * min(v), 3) for k, v in timings.items()}
