"""The processes benches and tests start, and waiting on them: standard library only.

A free loopback port, the `celery worker` command line, a local SeaweedFS (S3), waiting for a
condition, for an HTTP server and for a line in a log, and stopping a process. bench/ (cluster,
queue_latency, api_load, redock) and tests/ (conftest, hostile, webhooks) share these; nothing
here imports Phonos, so a bench can use them before Django is set up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# The SeaweedFS that tests and benches share (one per machine, on its fixed S3 port).
S3_PORT = 8333
S3_ACCESS_KEY = "phonos-test"
S3_SECRET_KEY = "phonos-test-secret-0123456789"


def free_port() -> int:
    """A free loopback port below 32768: the ephemeral range above it collides under load."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def wait_until(
    predicate: Callable[[], T],
    what: str | Callable[[], str] = "",
    *,
    timeout: float = 20,
    interval: float = 0.05,
) -> T:
    """The predicate's first true result, asked every `interval` seconds for `timeout`. `what`
    names what is awaited in the error; a callable is asked only then (to quote a fresh log)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            awaited = what() if callable(what) else what or predicate
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {awaited}")
        time.sleep(interval)


def wait_until_serving(
    url: str, process: subprocess.Popen, log: Path, *, timeout: float, what: str = "the server"
) -> None:
    """Until a GET of `url` answers 200; fails with the server's log if it exits or is late."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:  # refused, reset, timed out, or an HTTP error status
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer {url} in {timeout:g}s:\n{log.read_text()}")
        time.sleep(0.2)
    raise RuntimeError(f"{what} exited before answering {url}:\n{log.read_text()}")


def wait_for_log(
    log: Path, text: str, process: subprocess.Popen, *, timeout: float, what: str = "the worker"
) -> None:
    """Until `text` stands in the process's log (Celery's `ready.`); fails with the log if the
    process exits first or the text is late."""
    deadline = time.monotonic() + timeout
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)


def celery_worker_command(
    queues: str,
    *,
    name: str | None = None,
    concurrency: int = 1,
    pool: str | None = None,
    loglevel: str | None = "INFO",
) -> list[str]:
    """`celery -A phonos worker` on `queues`, without gossip and mingle (a test or bench
    cluster starts faster without them); `name` is the node name (`-n`), `loglevel` None
    leaves Celery's own default."""
    return [
        *(sys.executable, "-m", "celery", "-A", "phonos", "worker", "-Q", queues),
        *("--concurrency", str(concurrency)),
        *(("--pool", pool) if pool else ()),
        *(("--loglevel", loglevel) if loglevel else ()),
        *("--without-gossip", "--without-mingle"),
        *(("-n", name) if name else ()),
    ]


def stop(process: subprocess.Popen, *, timeout: float = 15, group: bool = False) -> None:
    """SIGTERM, then SIGKILL if it is still running after `timeout` seconds. `group`: signal the
    whole process group (a process started with `start_new_session=True` and its children)."""
    if process.poll() is not None:
        return

    def send(signum: int) -> None:
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the whole process group, with no clean-up: a lost node or an OOM kill."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def s3_is_up() -> bool:
    """Whether anything answers HTTP on the S3 port (any status will do)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{S3_PORT}", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def seaweedfs_command(workdir: Path) -> list[str]:
    """`weed mini` (next to this Python) serving S3 on S3_PORT with the test credentials, its
    data and configuration under `workdir`."""
    config = workdir / "s3.json"
    credentials = {"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "phonos",
                        "credentials": [credentials],
                        "actions": ["Admin", "Read", "List", "Write"],
                    }
                ]
            }
        )
    )
    return [
        str(Path(sys.executable).with_name("weed")),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        "-admin.ui=false",
        "-webdav=false",
        # Every test bucket is a collection with volumes of its own: small volumes, and room
        # for many, or a long run ends with "no free volumes left".
        "-master.volumeSizeLimitMB=64",
        "-volume.max=2000",
    ]
