"""The output lock without Ray: one holder, a live holder refused by name, stale locks taken over, a lost lock
stopping its old holder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines import lock as lock_module
from pipelines.lock import LockHeld, LockLost, OutputLock
from storage import locate


def test_one_holder_and_a_second_run_refused_with_the_holder_named(tmp_path):
    first = OutputLock(locate(tmp_path), log=lambda _: None)
    first.acquire()
    record = json.loads((tmp_path / "_lock.json").read_text())
    assert record["run"] == first.run and record["pid"] > 0 and record["host"]
    with pytest.raises(LockHeld, match=rf"run {first.run} \(host .+, pid \d+, started .+\)"):
        OutputLock(locate(tmp_path), log=lambda _: None).acquire()
    first.release()
    assert not (tmp_path / "_lock.json").exists()
    with OutputLock(locate(tmp_path), log=lambda _: None):  # free again
        assert (tmp_path / "_lock.json").exists()


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_line(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = OutputLock(locate(tmp_path))
    (tmp_path / "_lock.json").write_text(json.dumps(json.loads(holder._record()) | {"pid": dead.pid}))
    said = []
    taker = OutputLock(locate(tmp_path), log=said.append)
    taker.acquire()
    assert len(said) == 1 and "taking over" in said[0] and f"process {dead.pid}" in said[0]
    assert json.loads((tmp_path / "_lock.json").read_text())["run"] == taker.run
    taker.release()


def test_a_lock_not_refreshed_in_time_is_stale_even_from_another_host(tmp_path):
    record = json.loads(OutputLock(locate(tmp_path))._record())
    old = record | {"host": "elsewhere", "refreshed": record["refreshed"] - lock_module.STALE_S - 5}
    (tmp_path / "_lock.json").write_text(json.dumps(old))
    said = []
    with OutputLock(locate(tmp_path), log=said.append):
        assert "not refreshed" in said[0]
    fresh = record | {"host": "elsewhere"}
    (tmp_path / "_lock.json").write_text(json.dumps(fresh))
    with pytest.raises(LockHeld):
        OutputLock(locate(tmp_path), log=lambda _: None).acquire()


def test_a_holder_whose_lock_was_taken_over_stops_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "REFRESH_S", 0.05)
    first = OutputLock(locate(tmp_path), log=lambda _: None)
    first.acquire()
    first.check()  # still ours
    (tmp_path / "_lock.json").write_text(json.dumps(json.loads(first._record()) | {"run": "someone-else"}))
    assert first.lost.wait(5)
    with pytest.raises(LockLost):
        first.check()
    first.release()
    assert json.loads((tmp_path / "_lock.json").read_text())["run"] == "someone-else"  # not ours to delete
