"""One writer per output: a run takes the output folder before it writes anything, and gives it back at the end.

    OUTPUT/_lock.json    {"run", "host", "pid", "started", "refreshed"}

The record is created with a create-if-absent write where the store has one (a local file opened with O_EXCL;
an S3 object put with `If-None-Match: *` through boto3), so two runs started at once cannot both take it. Other
stores get a plain write read back a moment later: a race narrower than any two people can start two runs.

While the run lives it rewrites `refreshed` every REFRESH_S seconds. A lock is stale, and the next run takes it
over with a line saying so, when its holder is dead (same host, no such process: a run killed with SIGKILL or a
machine restart leaves its lock behind, and `--resume` of that run takes it over without any manual step) or has
not refreshed it for STALE_S seconds (a holder on another machine that died). A run that finds its lock taken
over by another stops before writing again (`LockLost`).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from storage import Location

LOCK = "_lock.json"
REFRESH_S = 20.0
STALE_S = 120.0


class LockHeld(RuntimeError):
    """Another live run holds the output; the message names it."""


class LockLost(RuntimeError):
    """This run's lock was taken over by another run: it must not write any more."""


@dataclass(frozen=True)
class Holder:
    run: str
    host: str
    pid: int
    started: str
    refreshed: float

    def describe(self) -> str:
        ago = time.time() - self.refreshed
        return f"run {self.run} (host {self.host}, pid {self.pid}, started {self.started}, seen {ago:.0f} s ago)"

    def stale(self, now: float) -> str | None:
        """Why this holder no longer holds the output, or None while it may be alive."""
        if self.host == socket.gethostname() and not _alive(self.pid):
            return f"its process {self.pid} on this host is gone"
        if now - self.refreshed > STALE_S:
            return f"it was not refreshed for {now - self.refreshed:.0f} s (more than {STALE_S:.0f} s)"
        return None


def _alive(pid: int) -> bool:
    """Whether a process of this host runs: it exists and is not a zombie (a killed process whose parent has not
    collected it yet still has its id)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):  # no /proc (not Linux): the process exists
        return True


def _create_if_absent(loc: Location, data: bytes) -> bool:
    """Write `data` at `loc` only if nothing is there; True when this call created it."""
    if loc.local:
        os.makedirs(os.path.dirname(loc.path), exist_ok=True)
        try:
            fd = os.open(loc.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    if loc.uri.startswith("s3://"):
        try:
            return _s3_create_if_absent(loc.uri, data)
        except ImportError:
            pass  # no boto3: the plain write below
    if loc.exists():
        return False
    loc.write_bytes(data)
    time.sleep(0.5)  # a second writer in the same instant overwrites it; reading back tells which one won
    return loc.read_bytes() == data


def _s3_create_if_absent(uri: str, data: bytes) -> bool:
    import boto3
    from botocore.exceptions import ClientError

    bucket, _, key = uri[len("s3://") :].partition("/")
    try:
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    return True


class OutputLock:
    """The lock of one output folder, taken by `acquire` and given back by `release`; a context manager."""

    def __init__(self, root: Location, log=print):
        self.loc = root.join(LOCK)
        self.log = log
        self.run = uuid.uuid4().hex[:12]
        self.started = time.strftime("%Y-%m-%d %H:%M:%S")
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps({"run": self.run, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": self.started, "refreshed": time.time()}).encode()  # fmt: skip

    def holder(self) -> Holder | None:
        try:
            return Holder(**json.loads(self.loc.read_bytes()))
        except (OSError, FileNotFoundError, ValueError, TypeError):
            return None  # gone meanwhile, or half written: read again next time

    def acquire(self) -> None:
        """Take the output, or raise LockHeld naming the live run that holds it."""
        for _ in range(3):
            if _create_if_absent(self.loc, self._record()):
                self._thread = threading.Thread(target=self._refresh, name="output-lock", daemon=True)
                self._thread.start()
                return
            holder = self.holder()
            if holder is None:
                continue
            why = holder.stale(time.time())
            if why is None:
                raise LockHeld(f"another run is writing there: {holder.describe()}; a lock not refreshed for "
                               f"{STALE_S:.0f} s is taken over")  # fmt: skip
            self.log(f"note: taking over the output's lock from run {holder.run}: {why}")
            self.loc.delete()
        raise LockHeld(f"could not take the lock {self.loc.uri}: other runs keep taking it")

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            holder = self.holder()
            if holder is not None and holder.run != self.run:
                self.lost.set()
                return
            self.loc.write_bytes(self._record())

    def check(self) -> None:
        """Raise LockLost when another run took the output over (called before each write)."""
        if self.lost.is_set():
            raise LockLost(f"the output was taken over by another run ({self.loc.uri}); this run stopped writing")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = self.holder()
        if holder is not None and holder.run == self.run:
            self.loc.delete()

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
