"""What a label run reports: the summary line, and summary.json."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field


def process_age() -> float:
    """Seconds since this process started (Linux's /proc; elsewhere since this module was imported), so that a
    run's phases count the interpreter's start and the imports too."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


class Timeline:
    """Seconds from the start of the process at which each phase of a run was first reached (summary.json's
    `phases`, what benchmarks/startup.py reports)."""

    def __init__(self):
        self.marks: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        self.marks.setdefault(phase, round(process_age(), 2))


@dataclass
class Summary:
    """Counts of one sitting of a label run, and of the whole output folder (`total_*`, earlier sittings'
    included). Filled in as the run goes (rows as they are written, files as the exports finish)."""

    rows: int  # rows this sitting wrote (one per input labeled)
    errors: int  # of those, error rows
    skipped: int  # inputs already in the output (--resume)
    seconds: float
    images_per_s: float
    total_rows: int  # rows in the output folder, all sittings
    total_errors: int = 0  # error rows in the output folder, all sittings
    duplicates_dropped: int = 0
    isolated: int = 0  # inputs a replica died on every time, written as error rows
    retried_errors: int = 0  # error rows of earlier runs labeled again (--retry-errors)
    unknown_labels: int = 0
    not_inputs: dict = field(default_factory=dict)  # what the source's listing skipped and why (link loops, ...)
    files: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)  # Timeline.marks

    def line(self) -> str:
        text = (
            f"labeled {self.rows} inputs, {self.errors} errors, {self.images_per_s:.2f} images/s, {self.seconds:.1f} s"
        )
        if self.skipped:
            text += f" ({self.skipped} already done, skipped)"
        if self.isolated:
            text += f"; {self.isolated} input(s) killed the replica every time and were set aside as error rows"
        return text
