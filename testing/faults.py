"""Model replicas that fail on purpose, handed to the label job by tests (`run_label(cfg, replica_class=...)`):
product code has no switch that makes it crash.

`os._exit` ends the replica's process at once, the way an out-of-memory kill or a segfault in a decoder does: no
exception reaches Ray, only the dead process.
"""

from __future__ import annotations

import os

from pipelines.replica import Replica


class CrashOnce(Replica):
    """Dies on its first batch, once per test: the first replica call that finds no file at `marker` creates it
    and exits; every later call (in a restarted replica) works."""

    marker: str = ""

    def __call__(self, batch):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().__call__(batch)
        os.write(fd, f"replica pid {os.getpid()} crashed here\n".encode())
        os.close(fd)
        os._exit(1)


class DiesOn(Replica):
    """Dies whenever its batch holds an input whose path ends with `poison`, every time."""

    poison: str = ""

    def __call__(self, batch):
        if any(str(p).endswith(self.poison) for p in batch["path"]):
            os._exit(3)
        return super().__call__(batch)


class RecordsNode(Replica):
    """Works normally and appends the id of the Ray node it runs on to the file `log` (where replicas ran)."""

    log: str = ""

    def __init__(self, *args, **kwargs):
        import ray

        super().__init__(*args, **kwargs)
        with open(self.log, "a") as f:
            f.write(ray.get_runtime_context().get_node_id() + "\n")


def records_node(log: str) -> type:
    return type("RecordsNodeTo", (RecordsNode,), {"log": str(log)})


def crash_once(marker: str) -> type:
    return type("CrashOnceAt", (CrashOnce,), {"marker": str(marker)})


def dies_on(poison: str) -> type:
    return type("DiesOnInput", (DiesOn,), {"poison": poison})
