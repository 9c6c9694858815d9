"""What a user sees and waits for, as they run it: a folder with a link loop and a link to a file already there,
two runs started at once on one output (local and in a bucket), and a console with the job's lines only.

Each test ends every process it started by id (the jobs' own sessions, the S3 server's)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rows import PartStore
from storage import locate
from testing.ray_cluster import clean_env, end_session
from testing.s3 import restore_env, set_env, start_s3

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]
# Every line a normal run may print: the job's own.
OURS = re.compile(r"^(progress: |labeled \d+ inputs|note: |export \w+: |error: |interrupted: )")


def job(checkpoint_dir, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.label", "--checkpoint", str(checkpoint_dir), "--output", str(out),
            "--max-new-tokens", "4", *extra]  # fmt: skip


def start(cmd: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=clean_env(**env), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        end_session(process.pid)
    return process.returncode, out, err


@pytest.fixture
def linked_folder(photo_paths, tmp_path) -> Path:
    """Two photographs, a folder holding a link back to its parent (a loop), and a link to a file already there."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for p in photo_paths[:2]:
        shutil.copy(p, folder / p.name)
    shutil.copy(photo_paths[2], folder / "sub" / photo_paths[2].name)
    (folder / "sub" / "loop").symlink_to("..")
    (folder / "zlink.png").symlink_to(folder / photo_paths[0].name)  # sorts after its target
    return folder


@pytest.mark.timeout(300)
def test_a_link_loop_and_a_second_path_to_a_file_give_one_row_per_file(
    checkpoint, linked_folder, photo_paths, tmp_path
):
    out = tmp_path / "out"
    status, stdout, err = finish(start(job(checkpoint("tiny")[0], out, "--images", str(linked_folder), "--task",
                                           "caption")))  # fmt: skip
    assert status == 0, err[-3000:]
    rows = list(PartStore(out / "predictions").iter_rows())
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in photo_paths[:3])
    assert "zlink.png" not in {Path(r["path"]).name for r in rows}  # astronaut.png is first in sorted order
    loops = [line for line in err.splitlines() if "link loop" in line]
    assert len(loops) == 1 and "sub/loop -> .." in loops[0]
    skipped = json.loads((out / "summary.json").read_text())["not_inputs"]
    assert skipped["link loop"] == 1 and skipped["same file"] == 1


def one_writer(first: subprocess.Popen, second: subprocess.Popen) -> tuple[str, list[tuple]]:
    """Both runs' ends; asserts one wrote and the other refused with one line; returns that line."""
    a, b = finish(first), finish(second)
    statuses = sorted([a[0], b[0]])
    assert statuses == [0, 2], (a[2][-2000:], b[2][-2000:])
    refused = a if a[0] == 2 else b
    lines = [line for line in refused[2].splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --output") and "another run is writing there" in lines[0]
    return lines[0]


@pytest.mark.timeout(400)
def test_two_runs_at_once_on_one_local_output_give_one_writer(checkpoint, photo_paths, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in photo_paths:
        shutil.copy(p, images / p.name)
    out = tmp_path / "out"
    cmd = job(checkpoint("tiny")[0], out, "--images", str(images), "--task", "caption", "--no-progress")
    line = one_writer(start(cmd), start(cmd))
    assert "pid" in line and "host" in line
    rows = list(PartStore(out / "predictions").iter_rows())
    assert len(rows) == len({(r["image_id"], r["prompt"]) for r in rows}) == len(photo_paths)
    assert not (out / "_lock.json").exists()  # given back at the end


@pytest.mark.timeout(400)
def test_two_runs_at_once_on_one_bucket_output_give_one_writer(checkpoint, photo_paths, tmp_path):
    import boto3

    server = start_s3()
    before = set_env(server)
    try:
        boto3.client("s3").create_bucket(Bucket="bucket")
        images = tmp_path / "images"
        images.mkdir()
        for p in photo_paths:
            shutil.copy(p, images / p.name)
        out = "s3://bucket/runs/twice"
        cmd = job(checkpoint("tiny")[0], out, "--images", str(images), "--task", "caption", "--no-progress")
        one_writer(start(cmd, **server.env()), start(cmd, **server.env()))
        rows = list(PartStore(locate(out).join("predictions")).iter_rows())
        assert len(rows) == len({(r["image_id"], r["prompt"]) for r in rows}) == len(photo_paths)
    finally:
        restore_env(before)
        server.stop()


@pytest.mark.timeout(400)
def test_a_non_terminal_run_prints_only_the_jobs_lines_and_verbose_shows_rays(checkpoint, photo_paths, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in photo_paths:
        shutil.copy(p, images / p.name)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    cmd = job(checkpoint("tiny")[0], tmp_path / "out", "--images", str(images), "--task", "caption",
              "--progress-every", "1", "--batch-size", "1")  # fmt: skip
    status, stdout, err = finish(start(cmd))
    assert status == 0, err[-3000:]
    lines = [line for line in (stdout + err).splitlines() if line.strip()]
    assert lines and all(OURS.match(line) for line in lines), [line for line in lines if not OURS.match(line)]
    assert sum(line.startswith("labeled 5 inputs") for line in lines) == 1
    assert any(line.startswith("progress: ") for line in lines)  # a plain line every second, in the job's words
    status, stdout, err = finish(start(job(checkpoint("tiny")[0], tmp_path / "verbose", "--images", str(images),
                                           "--task", "caption", "--verbose", "--no-progress")))  # fmt: skip
    assert status == 0 and any(not OURS.match(line) for line in (stdout + err).splitlines() if line.strip())
