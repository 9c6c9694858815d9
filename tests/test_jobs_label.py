"""`python -m jobs.label` as users run it: --help, a killed run resumed, and `ray job submit` to a real head.

Each test starts its own Ray (in a subprocess) and ends every process it started by id: the job's own process
group and session, and the head's session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.label import KILL_AFTER_PARTS_ENV

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def session_pids(sid: int) -> list[int]:
    """Processes whose session id is `sid` (a session this test created with start_new_session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def end_session(sid: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, every process of a session we started (Ray's workers sit in other groups of it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_pids(sid):
            return


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_env(**extra: str) -> dict:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_ADDRESS="local")
    env["PYTHONPATH"] = str(ROOT)
    return env | extra


@pytest.fixture(scope="module")
def photo_folder(photo_paths, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for p in photo_paths:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    return folder


def test_help_lists_the_flags_users_rely_on():
    done = subprocess.run([sys.executable, "-m", "jobs.label", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0
    for flag in ("--checkpoint", "--images", "--coco", "--manifest", "--task", "--classes", "--prompt", "--output",
                 "--replicas", "--gpus-per-replica", "--batch-size", "--device", "--dtype", "--backend", "--resume",
                 "--previews", "ray job submit", "Exit status"):  # fmt: skip
        assert flag in done.stdout


@pytest.mark.timeout(240)
def test_resume_after_a_killed_run_finishes_without_duplicates(checkpoint, photo_folder, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.label", "--checkpoint", str(checkpoint("tiny")[0]), "--images",
           str(photo_folder), "--task", "caption", "--output", str(out), "--max-new-tokens", "4", "--batch-size", "1",
           "--rows-per-part", "2", "--no-progress"]  # fmt: skip
    # The driver SIGKILLs itself right after its first part file: a job killed mid-run.
    first = subprocess.Popen(cmd, cwd=ROOT, env=job_env(**{KILL_AFTER_PARTS_ENV: "1"}), start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        first.communicate(timeout=150)
    finally:
        end_session(first.pid)
    assert first.returncode == -signal.SIGKILL
    parts = list((out / "predictions").glob("part-*.parquet"))
    assert len(parts) == 1 and pq.read_table(parts[0]).num_rows == 2
    (out / "predictions" / ".part-dead-00001.parquet.tmp").write_bytes(b"half a file")  # a write cut short

    again = subprocess.Popen([*cmd, "--resume"], cwd=ROOT, env=job_env(), start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        log, _ = again.communicate(timeout=150)
    finally:
        end_session(again.pid)
    assert again.returncode == 0, log[-3000:]
    rows = pq.read_table(out / "predictions").to_pylist()
    keys = [(r["image_id"], r["prompt"]) for r in rows]
    assert len(keys) == len(set(keys)) == 5  # 4 photographs and the broken file, each once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == 2 and summary["inputs"] == 3 and summary["total_rows"] == 5
    assert not list((out / "predictions").glob(".*.tmp"))


@pytest.mark.timeout(300)
def test_ray_job_submit_to_a_local_head(checkpoint, photo_folder, tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dashboard = free_port(), free_port()
    ports = {
        "--port": gcs,
        "--dashboard-port": dashboard,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
    }
    head_cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--num-cpus", "2",
                "--temp-dir", temp_dir, "--disable-usage-stats"]  # fmt: skip
    for flag, port in ports.items():
        head_cmd += [flag, str(port)]
    env = job_env()
    env.pop("RAY_ADDRESS")
    head = subprocess.Popen(head_cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401 without the token: the dashboard is up
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not come up"
                time.sleep(1)
        out = tmp_path / "out"
        submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
                  "python", "-m", "jobs.label", "--checkpoint", str(checkpoint("tiny")[0]), "--images",
                  str(photo_folder), "--task", "detect", "--classes", "cat ; dog", "--output", str(out),
                  "--max-new-tokens", "6", "--replicas", "2", "--batch-size", "2"]  # fmt: skip
        done = subprocess.run(submit, env=env | {"RAY_AUTH_MODE": "token"}, capture_output=True, text=True,
                              timeout=200)  # fmt: skip
        log = done.stdout + done.stderr
        assert done.returncode == 0, log[-4000:]
        assert "succeeded" in log and "labeled 5 inputs, 1 errors" in log
        rows = pq.read_table(out / "predictions").to_pylist()
        assert len(rows) == 5 and sum(1 for r in rows if r["error"]) == 1
        assert (out / "coco_results.json").is_file() and (out / "coco_dataset.json").is_file()
    finally:
        end_session(head.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)
