"""The job's console: Ray's log lines told from the job's own, and progress in the job's words."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest

from pipelines.console import Progress, is_ray_line

RAY_LINES = [
    "[2026-12-01 21:07:26,068 E 2965 2965] core_worker.cc:2465: Actor with class name ...",  # C++ core, driver
    "\x1b[33m(raylet)\x1b[0m [2026-12-01 21:03:32,581 I 1377 1377] logging.cc:303: Set ray log level ...",
    "(raylet, ip=10.0.0.2) [2026-12-01 21:03:32,581 W 1377 1377] node_manager.cc:12: ...",  # a worker node's
    "2026-12-01 21:06:33,409\tWARNING __init__.py:28 -- Progress bars disabled. ...",  # Ray's Python logging
    "2026-12-01 21:03:30,932\tINFO streaming_executor.py:215 -- Starting execution of Dataset ...",
]
OUR_LINES = [
    "labeled 12 inputs, 0 errors, 3.10 images/s, 4.2 s",
    "progress: 3/12 rows (25%), ...",
    "error: --output /x: another run is writing there",
    "note: skipped a link loop: sub/loop -> ..",
]


@pytest.mark.parametrize("line", RAY_LINES)
def test_rays_lines_are_recognized(line):
    assert is_ray_line(line)


@pytest.mark.parametrize("line", OUR_LINES)
def test_the_jobs_own_lines_are_not(line):
    assert not is_ray_line(line)


def test_the_filter_drops_rays_lines_written_to_the_file_descriptor_and_keeps_the_rest():
    code = (
        "import os, sys\n"
        "from pipelines.console import RayLineFilter\n"
        "with RayLineFilter():\n"
        f"    os.write(2, {RAY_LINES[0]!r}.encode() + b'\\n')\n"  # as Ray's C++ core writes: straight to fd 2
        "    print('ours, through sys.stderr', file=sys.stderr)\n"
        f"    os.write(2, {RAY_LINES[3]!r}.encode() + b'\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.splitlines() == ["ours, through sys.stderr", "after"]


def test_progress_off_a_terminal_is_a_plain_line_every_few_seconds():
    stream = io.StringIO()
    with Progress(10, every=0.05, stream=stream, terminal=False) as progress:
        progress.update(4, errors=1)
        time.sleep(0.2)
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith("progress: 4/10 rows (40%)") and "1 errors" in line for line in lines)


def test_progress_on_a_terminal_is_one_bar_redrawn_in_place():
    stream = io.StringIO()
    with Progress(8, stream=stream, terminal=True) as progress:
        progress.update(8)
    text = stream.getvalue()
    assert text.startswith("\r[") and text.endswith("\n") and text.count("\n") == 1 and "8/8 rows (100%)" in text
