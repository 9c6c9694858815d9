"""Which Ray a job runs on, said plainly.

- `--address ADDR`, or `RAY_ADDRESS` in the environment (which `ray job submit` sets for its entrypoint): join
  that cluster. The address is probed first, so an unreachable one fails within seconds with one line naming it
  instead of Ray's minutes of retries.
- Otherwise: start a private local instance (`ray.init(address="local")`). A plain `ray.init()` would instead
  join whatever address an earlier `ray start` left in Ray's temp folder, even when that cluster is long dead.
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse


class ClusterError(RuntimeError):
    """The Ray cluster asked for cannot be reached."""


def probe(address: str, timeout: float = 5.0) -> None:
    """Raise ClusterError when nothing answers at a `host:port`, `ray://host:port` or `http://host:port` address."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise ClusterError(f"Ray address {address!r}: expected host:port (or ray://host:port)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({e.strerror or e})") from None


def quiet_ray() -> dict:
    """ray.init options that keep a normal run's console free of Ray's lines (pipelines/console.py has the rest):

    - Ray's Python loggers at ERROR: token authentication (on by default since Ray 2.60) logs a WARNING at every
      start, which the README explains once;
    - worker processes' output is not forwarded to the driver (it stays in Ray's log folder);
    - Ray Data (2.60) hands every actor-pool worker its context and UDF as object references, so with actor
      restarts on (which exactly-once needs) Ray's core logs an ERROR that "the actor restart will fail" if those
      objects were lost. Ray Data holds them for the whole run, so they are not lost; the driver's stderr filter
      (console.RayLineFilter) drops the line. (RAY_BACKEND_LOG_LEVEL would hide it too, but prints a line of its
      own in every process.)
    """
    from pipelines.console import quiet_ray_loggers

    quiet_ray_loggers()
    return {"logging_level": logging.ERROR, "log_to_driver": False}


def connect(address: str | None = None, verbose: bool = False, **init_options) -> bool:
    """Join or start Ray as the module docstring says; returns True when this call started (and so owns) it.

    verbose: leave Ray's own logging as Ray sets it (see quiet_ray for what is hidden otherwise).
    """
    import ray

    if ray.is_initialized():
        return False
    if not verbose:
        init_options = quiet_ray() | init_options
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        probe(address)
        try:
            ray.init(address=address, **init_options)
        except (ConnectionError, ray.exceptions.AuthenticationError) as e:
            hint = ""
            if "token" in str(e).lower() and os.environ.get("RAY_AUTH_MODE") != "token":
                hint = "; the cluster uses token authentication: set RAY_AUTH_MODE=token (and its token file)"
            raise ClusterError(f"cannot join the Ray cluster at {address} ({str(e).splitlines()[0]}){hint}") from None
    else:
        # A private instance needs no dashboard (the label job asks nothing of it): starting one costs seconds.
        ray.init(address="local", **({"include_dashboard": False} | init_options))
    return True


class RaySession:
    """Ray for one job, with the console kept free of Ray's lines (pipelines.console) from its start to its
    shutdown. `start()` joins or starts Ray (ClusterError if it cannot); `close()` shuts down a Ray this session
    started. Ray starts on the main thread: started from another one, its driver lost the GCS within a minute on
    this machine ("Failed to connect to GCS within 60 seconds"), so the start is not overlapped with planning.
    """

    def __init__(self, address: str | None, verbose: bool, **init_options):
        self.address, self.verbose, self.init_options = address, verbose, init_options
        self._started: bool | None = None
        self._console = None

    def start(self) -> bool:
        """True when this session started (and so owns) the Ray it joined."""
        import contextlib

        from pipelines.console import RayLineFilter

        if self._started is None:
            self._console = contextlib.nullcontext() if self.verbose else RayLineFilter()
            self._console.__enter__()
            try:
                self._started = connect(self.address, self.verbose, **self.init_options)
            except BaseException:
                self._console.__exit__(None, None, None)
                raise
        return self._started

    def logs(self) -> str | None:
        """Where this Ray session's logs are (the summary names them)."""
        try:
            import ray

            return ray._private.worker.global_worker.node.get_logs_dir_path()
        except Exception:  # noqa: BLE001 - a private attribute of Ray's: the path is a courtesy, never a failure
            return None

    def close(self) -> None:
        if self._started is None:
            return
        if self._started:
            import ray

            ray.shutdown()
        self._console.__exit__(None, None, None)
        self._started = None
