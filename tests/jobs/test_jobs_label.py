"""`python -m jobs.label` as users run it: --help, a killed run resumed, Ctrl-C, which Ray it joins, and
`ray job submit` to a real head.

Each test ends every process it started by id: the job's own session and the heads' sessions.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rows import PartStore
from testing.ray_cluster import BIN, clean_env, end_session, free_port, kill_session, start_head

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def photo_folder(photo_paths, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for p in photo_paths:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    return folder


def job(checkpoint_dir, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.label", "--checkpoint", str(checkpoint_dir), "--output", str(out),
            "--max-new-tokens", "4", "--no-progress", *extra]  # fmt: skip


def keys(out: Path) -> list[tuple]:
    return [(r["image_id"], r["prompt"]) for r in PartStore(out / "predictions").iter_rows()]


def start(cmd: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=clean_env(**env), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 200) -> tuple[int, str]:
    """Wait for a started job; its exit status and stderr. Whatever it leaves running is ended by id."""
    try:
        _, err = process.communicate(timeout=timeout)
    finally:
        end_session(process.pid)
    return process.returncode, err


def wait_for_commit(out: Path, process: subprocess.Popen, timeout: float = 150) -> None:
    commits = out / "predictions" / "_commits"
    deadline = time.monotonic() + timeout
    while not (commits.is_dir() and any(commits.iterdir())):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no part was committed in time"
        time.sleep(0.05)


def test_help_lists_the_flags_users_rely_on():
    done = subprocess.run([sys.executable, "-m", "jobs.label", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0
    for flag in ("--checkpoint", "--images", "--coco", "--manifest", "--parquet", "--task", "--classes", "--prompt",
                 "--output", "--replicas", "--gpus-per-replica", "--batch-size", "--device", "--dtype", "--backend",
                 "--resume", "--retry-errors", "--previews", "--export", "--nms", "--class-thresholds", "--address",
                 "ray job submit", "Exit status"):  # fmt: skip
        assert flag in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_after_a_killed_run_finishes_without_duplicates(checkpoint, photo_folder, tmp_path):
    out = tmp_path / "out"
    cmd = job(checkpoint("tiny")[0], out, "--images", str(photo_folder), "--task", "caption", "--batch-size", "1",
              "--rows-per-part", "2")  # fmt: skip
    first = start(cmd)
    try:
        wait_for_commit(out, first)
    finally:
        kill_session(first.pid)  # the whole job, Ray included, dies at once: no chance to save anything
    done_before = len(keys(out))
    assert 1 <= done_before <= 5  # one part at least (a slow machine may commit a part of one row at 60 s)
    assert (out / "_lock.json").is_file()  # the killed run could not give its lock back
    PartStore(out / "predictions").write(PartStore(out / "predictions").iter_tables().__next__(), commit=False)
    status, err = finish(start([*cmd, "--resume"]))
    assert status == 0, err[-3000:]
    assert "taking over the output's lock" in err and not (out / "_lock.json").exists()
    assert len(keys(out)) == len(set(keys(out))) == 5  # 4 photographs and the broken file, each once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == done_before and summary["rows"] == 5 - done_before and summary["total_rows"] == 5


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_saves_the_rows_says_how_to_go_on_and_resume_finishes_exactly_once(checkpoint, photo_folder, tmp_path):
    out = tmp_path / "out"
    cmd = job(checkpoint("tiny")[0], out, "--images", str(photo_folder), "--task", "detect", "--classes",
              "cat ; dog ; person ; car", "--per-class", "--batch-size", "1", "--rows-per-part", "1")  # fmt: skip
    first = start(cmd)
    try:
        wait_for_commit(out, first)
    except AssertionError:
        end_session(first.pid)
        raise
    first.send_signal(signal.SIGINT)
    status, err = finish(first, timeout=60)
    assert status == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1 and "--resume" in lines[0] and "Traceback" not in err
    saved = len(keys(out))
    assert f"{saved} row(s)" in lines[0] or saved >= 1
    command = lines[0].split("continue with: ", 1)[1]
    assert command.startswith("python -m jobs.label") and command.endswith("--resume")
    status, err = finish(start([*cmd, "--resume"]))
    assert status == 0, err[-3000:]
    assert len(keys(out)) == len(set(keys(out))) == 5 * 4


@pytest.mark.timeout(120)
def test_a_plain_run_ignores_an_address_left_by_a_dead_ray_start(checkpoint, photo_paths, tmp_path):
    """A `ray start` killed without `ray stop` leaves /tmp/ray/ray_current_cluster; a plain run starts its own."""
    temp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths have a length limit
    (temp / "ray").mkdir()
    (temp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")  # nothing listens there
    env = {"RAY_TMPDIR": str(temp)}
    started = time.monotonic()
    done = subprocess.run(job(checkpoint("tiny")[0], tmp_path / "out", "--images", str(photo_paths[0].parent),
                              "--task", "ocr", "--limit", "1"), cwd=ROOT, env=clean_env(**env), capture_output=True,
                          text=True, timeout=110)  # fmt: skip
    shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "labeled 1 inputs" in done.stdout and time.monotonic() - started < 100


@pytest.mark.timeout(60)
def test_an_unreachable_ray_address_fails_fast_in_one_line(checkpoint, photo_paths, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = subprocess.run(job(checkpoint("tiny")[0], tmp_path / "out", "--images", str(photo_paths[0].parent),
                              "--task", "ocr"), cwd=ROOT, env=clean_env(RAY_ADDRESS=address), capture_output=True,
                          text=True, timeout=50)  # fmt: skip
    assert time.monotonic() - started < 30
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and address in errors[0] and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_job_submit_to_a_local_head(checkpoint, photo_folder, tmp_path):
    cluster = start_head(num_cpus=2)
    try:
        out = tmp_path / "out"
        submit = [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--working-dir", str(ROOT),
                  "--", "python", "-m", "jobs.label", "--checkpoint", str(checkpoint("tiny")[0]), "--images",
                  str(photo_folder), "--task", "detect", "--classes", "cat ; dog", "--output", str(out),
                  "--max-new-tokens", "6", "--replicas", "2", "--batch-size", "2"]  # fmt: skip
        done = subprocess.run(submit, env=clean_env(RAY_AUTH_MODE="token"), capture_output=True, text=True,
                              timeout=240)  # fmt: skip
        log = done.stdout + done.stderr
        assert done.returncode == 0, log[-4000:]
        assert "succeeded" in log and "labeled 5 inputs, 1 errors" in log
        rows = list(PartStore(out / "predictions").iter_rows())
        assert len(rows) == 5 and sum(1 for r in rows if r["error"]) == 1
        assert (out / "coco_results.json").is_file() and (out / "coco_dataset.json").is_file()
    finally:
        cluster.stop()
