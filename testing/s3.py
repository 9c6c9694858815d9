"""An S3-compatible server on 127.0.0.1 for tests: moto's server mode (a real HTTP server speaking the S3 API),
started at a free port and stopped by its process id. Clients find it the standard way, through the
AWS_ENDPOINT_URL and AWS_* credential variables that `env()` returns (boto3, s3fs and pyarrow all read them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from testing.ray_cluster import end_session, free_port


@dataclass
class S3Server:
    process: subprocess.Popen
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance-profile lookups against a cloud that is not there
        }

    def stop(self) -> None:
        end_session(self.process.pid, grace=5)


def start_s3() -> S3Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = S3Server(process, port)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(server.endpoint, timeout=1)
            return server
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise TimeoutError("moto's S3 server did not come up") from None
            time.sleep(0.2)


def set_env(server: S3Server) -> dict[str, str | None]:
    """Point this process at the server; returns the previous values for `restore_env`."""
    before = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    return before


def restore_env(before: dict[str, str | None]) -> None:
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
