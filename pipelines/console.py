"""A console that is the job's own: progress in the job's words, and none of Ray's lines unless --verbose.

Ray's lines come from three places, and each is kept off the console differently (all of them still go to Ray's
log folder, which the summary names):

- its Python loggers (`ray`, `ray.data`, `ray.train`): set to ERROR level (`quiet_ray_loggers`);
- what its worker processes print, forwarded to the driver: `ray.init(log_to_driver=False)` (pipelines/cluster.py);
- its C++ core writing to the driver's own stderr: with actor restarts on (which exactly-once needs), Ray logs an
  ERROR that an actor's constructor arguments live in the object store, and the only switch that hides it
  (RAY_BACKEND_LOG_LEVEL) itself prints a line in every process. So while Ray runs, the driver's stderr goes
  through a filter (`RayLineFilter`) that drops lines in Ray's log formats and passes every other line through.

`Progress` prints rows done of the total, rows/s, errors and the time left: a bar redrawn in place on a terminal,
a plain line every `every` seconds otherwise (`ray job submit` logs, CI, nohup, a notebook).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time

# [2026-12-01 21:07:26,068 E 2965 2965] core_worker.cc:2465: ...   (optionally behind a "(raylet) " prefix)
# 2026-12-01 21:06:33,409	WARNING __init__.py:28 -- ...
_STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+"
_RAY_LINE = re.compile(
    r"^(?:\x1b\[\d+m)?(?:\([\w.]+(?: pid=\d+)?(?:, ip=[\d.]+)?\)(?:\x1b\[0m)? )?"  # "(raylet) ", coloured or not
    rf"(?:\[{_STAMP} [DIWEF] \d+ \d+\] |{_STAMP}\t[A-Z]+ \S+:\d+ -- )"  # C++ core, or Python logging
)
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")


def is_ray_line(line: str) -> bool:
    return bool(_RAY_LINE.match(line))


def quiet_ray_loggers() -> None:
    """Ray's Python loggers at ERROR (their records still reach Ray's own log files)."""
    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


class RayLineFilter:
    """While active, the process's stderr (file descriptor 2, which Ray's C++ core writes to) passes through a
    thread that drops Ray's log lines; every other line reaches the terminal unchanged and in order."""

    def __init__(self):
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RayLineFilter:
        sys.stderr.flush()
        read, write = os.pipe()
        self._saved = os.dup(2)
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._pump, args=(read, self._saved), daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _pump(read: int, out: int) -> None:
        with os.fdopen(read, "rb") as pipe:
            for raw in pipe:
                if not is_ray_line(raw.decode("utf-8", "replace")):
                    os.write(out, raw)

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last writer: the pump reads to its end and stops
        self._thread.join(timeout=10)
        os.close(self._saved)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Rows done of `total` as the job writes them; see the module docstring. `update` is called from the
    driver's loop; on a non-terminal a timer thread prints every `every` seconds even while no row arrives."""

    def __init__(self, total: int, every: float = 30.0, stream=None, terminal: bool | None = None, label="rows"):
        self.total, self.every, self.label = total, every, label
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.rows = self.errors = 0
        self.start = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None if self.terminal else threading.Thread(target=self._tick, daemon=True)
        self._drawn = 0.0

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.rows / elapsed
        left = (self.total - self.rows) / rate if rate > 0 and self.total > self.rows else None
        eta = _duration(left) if left is not None else ("done" if self.rows >= self.total else "--:--")
        share = 100 * self.rows / max(self.total, 1)
        return (f"{self.rows}/{self.total} {self.label} ({share:.0f}%), {rate:.2f} {self.label}/s, "
                f"{self.errors} errors, {_duration(elapsed)} elapsed, {eta} left")  # fmt: skip

    def bar(self) -> str:
        width = 24
        filled = int(width * self.rows / max(self.total, 1))
        return f"\r[{'#' * filled}{'.' * (width - filled)}] {self.line()}\x1b[K"

    def __enter__(self) -> Progress:
        self.start = time.perf_counter()
        if self._thread is not None:
            self._thread.start()
        return self

    def update(self, rows: int, errors: int = 0) -> None:
        with self._lock:
            self.rows += rows
            self.errors += errors
            if self.terminal and time.perf_counter() - self._drawn > 0.2:
                self._drawn = time.perf_counter()
                self.stream.write(self.bar())
                self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                print(f"progress: {self.line()}", file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.terminal:
            self.stream.write(self.bar() + "\n")
            self.stream.flush()
