"""What a label run reports: the summary line, and summary.json."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def line(self) -> str:
        text = (
            f"labeled {self.rows} inputs, {self.errors} errors, {self.images_per_s:.2f} images/s, {self.seconds:.1f} s"
        )
        if self.skipped:
            text += f" ({self.skipped} already done, skipped)"
        if self.isolated:
            text += f"; {self.isolated} input(s) killed the replica every time and were set aside as error rows"
        return text
