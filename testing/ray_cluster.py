"""Ray clusters on this machine for tests: `ray start` heads and workers in sessions of their own, ended by the
process ids of those sessions (never `ray stop`, which would end other people's Ray too).

A head ended by a signal leaves its address in Ray's temp folder; tests that start one give it a temp folder of
its own (`--temp-dir`), so nothing they leave behind can be picked up by a later plain run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


def session_pids(sid: int) -> list[int]:
    """Processes whose session id is `sid` (a session a test created with start_new_session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def end_session(sid: int, grace: float = 10.0, signals=(signal.SIGTERM, signal.SIGKILL)) -> None:
    """SIGTERM, then SIGKILL, every process of a session we started (Ray's workers sit in other groups of it)."""
    for sig in signals:
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_pids(sid):
            return


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session at once: a job that dies with no chance to save anything."""
    end_session(sid, grace=10.0, signals=(signal.SIGKILL,))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict:
    """The environment for a job or `ray` command: this venv first on PATH, the repository importable, and no
    RAY_ADDRESS from outside."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(root))
    env.pop("RAY_ADDRESS", None)
    return env | extra


def cluster_env(**extra: str) -> dict:
    """clean_env for processes that join a test cluster: token authentication (on by default in Ray 2.60) makes
    every client send the token `ray start --head` wrote, which it does only with RAY_AUTH_MODE=token."""
    return clean_env(RAY_AUTH_MODE="token", **extra)


# Every port a node listens on, chosen free so that tests never collide with another Ray on this machine.
WORKER_PORTS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
)


def _ports(*flags: str) -> list[str]:
    out = []
    for flag in flags:
        out += [flag, str(free_port())]
    return out


@dataclass
class Node:
    process: subprocess.Popen
    temp_dir: str = ""

    def stop(self) -> None:
        end_session(self.process.pid)


@dataclass
class LocalCluster:
    """A head (and maybe workers) started by `ray start --block`, each in its own session."""

    gcs_port: int
    dashboard_port: int
    temp_dir: str
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def add_worker(self, num_cpus: int = 1, resources: str | None = None) -> Node:
        cmd = [str(BIN / "ray"), "start", "--block", "--address", self.address, "--node-ip-address", "127.0.0.1",
               "--num-cpus", str(num_cpus), "--disable-usage-stats"]  # fmt: skip
        cmd += _ports(*WORKER_PORTS)
        if resources:
            cmd += ["--resources", resources]
        node = Node(subprocess.Popen(cmd, env=cluster_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL))  # fmt: skip
        self.nodes.append(node)
        return node

    def wait_for_nodes(self, count: int, timeout: float = 90) -> None:
        import json

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = subprocess.run(
                [sys.executable, "-c", f"import ray, json; ray.init(address='{self.address}', logging_level='ERROR');"
                 "print(json.dumps(len([n for n in ray.nodes() if n['Alive']])))"],
                env=cluster_env(), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if done.returncode == 0 and json.loads(done.stdout.strip().splitlines()[-1]) >= count:
                return
            time.sleep(2)
        raise TimeoutError(f"fewer than {count} Ray nodes came up at {self.address}")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        import shutil

        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_head(num_cpus: int = 2, resources: str | None = None, dashboard: bool = True) -> LocalCluster:
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dash = free_port(), free_port()
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard",
           "true" if dashboard else "false", "--num-cpus", str(num_cpus), "--temp-dir", temp_dir,
           "--disable-usage-stats"]  # fmt: skip
    cmd += _ports("--ray-client-server-port", *WORKER_PORTS)
    if resources:
        cmd += ["--resources", resources]
    head = Node(subprocess.Popen(cmd, env=clean_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL), temp_dir)  # fmt: skip
    cluster = LocalCluster(gcs, dash, temp_dir, [head])
    deadline = time.monotonic() + 90
    while True:
        try:
            if dashboard:
                urllib.request.urlopen(f"{cluster.dashboard}/api/version", timeout=2)
            else:
                socket.create_connection(("127.0.0.1", gcs), timeout=2).close()
            break
        except urllib.error.HTTPError:  # 401 without the token: the dashboard is up
            break
        except OSError:
            if head.process.poll() is not None or time.monotonic() > deadline:
                cluster.stop()
                raise TimeoutError("the Ray head did not come up") from None
            time.sleep(1)
    return cluster
