import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from django.conf import settings
from django.core.servers.basehttp import ThreadedWSGIServer

from apps.accounts.models import Account
from apps.accounts.services import api_key_create
from apps.billing.services import account_open
from bench import processes
from bench.processes import S3_ACCESS_KEY, S3_PORT, S3_SECRET_KEY

# Test modules import free_port from here.
from bench.processes import free_port as free_port


@dataclass
class Client:
    """A tenant's view of the API over real HTTP."""

    base_url: str
    key: str
    account: Account

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **(headers or {})}

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs["headers"] = self._headers(kwargs.get("headers"))
        return requests.get(self.base_url + path, timeout=30, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        kwargs["headers"] = self._headers(kwargs.get("headers"))
        return requests.post(self.base_url + path, json=json, timeout=30, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs["headers"] = self._headers(kwargs.get("headers"))
        return requests.delete(self.base_url + path, timeout=30, **kwargs)

    def balance(self) -> int:
        self.account.refresh_from_db()
        return self.account.credit_balance


# The live server's listen backlog (Django: 10) overflows when the concurrency tests open 30
# connections at once on a busy machine; the kernel then resets connections. Production runs
# gunicorn, whose backlog is 2048.
ThreadedWSGIServer.request_queue_size = 256


@pytest.fixture(autouse=True)
def clean_redis() -> Iterator[None]:
    from apps.jobs.availability import presence_cache_clear

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    # Worker presence is cached per process for a few seconds; a test starts from what is live.
    presence_cache_clear()
    yield
    client.flushdb()


@pytest.fixture
def make_client(live_server) -> Callable[..., Client]:
    counter = iter(range(1, 10_000))

    def make(
        *,
        credits: int = 1000,
        rate_limit: int | None = 1000,
        name: str | None = None,
        max_active_jobs: int | None = None,
    ) -> Client:
        username = name or f"tenant{next(counter)}"
        account = account_open(username=username, email=f"{username}@example.com", credits=credits)
        if max_active_jobs is not None:
            account.max_active_jobs = max_active_jobs
            account.save(update_fields=["max_active_jobs"])
        if rate_limit is not None:
            # What an operator does for a customer who needs more (the default maximum is lower).
            account.max_key_rate_limit = rate_limit
            account.save(update_fields=["max_key_rate_limit"])
        created = api_key_create(account=account, name="test", rate_limit_per_minute=rate_limit)
        return Client(base_url=live_server.url, key=created.raw_key, account=account)

    return make


@pytest.fixture
def alice(make_client) -> Client:
    return make_client(name="alice")


@pytest.fixture
def charlie(make_client) -> Client:
    """Another tenant, who must never see alice's data."""
    return make_client(name="charlie")


def parallel(
    calls: list[Callable[[], requests.Response]], workers: int = 32
) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda call: call(), calls))


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until `url`'s /v1/health answers 200; fails with the server's log if it exits or is late."""
    processes.wait_until_serving(f"{url}/v1/health", process, log, timeout=timeout)


# One glycine: the smallest receptor PDB a docking submission takes.
GLYCINE_PDB = """\
ATOM      1  N   GLY A   1      -1.195   0.000   0.000  1.00  0.00           N
ATOM      2  CA  GLY A   1       0.000   0.000   0.000  1.00  0.00           C
ATOM      3  C   GLY A   1       1.520   0.000   0.000  1.00  0.00           C
ATOM      4  O   GLY A   1       2.100   1.050   0.000  1.00  0.00           O
END
"""

ESMFOLD_JOB = {"model": "esmfold", "sequence": "MGSSHHHHHHSSGLVPRGSHMASMTGGQQMGRGS", "name": "demo"}


@dataclass
class WorkerProcess:
    """A real `celery worker` process, run against the test database and Redis."""

    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        processes.stop(self.process, timeout=15)

    def kill_hard(self) -> None:
        """SIGKILL the whole process group, as an OOM kill or a lost node would."""
        processes.kill_group(self.process)


def worker_environment(**extra: str) -> dict[str, str]:
    from django.db import connection

    database = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": (
            f"postgres://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        ),
        "REDIS_URL": settings.REDIS_URL,
        "PHONOS_STORAGE_DIR": str(settings.PHONOS_STORAGE_DIR),
        **extra,
    }


@pytest.fixture
def start_worker(tmp_path: Path, transactional_db) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `celery -A phonos worker` on the given queues; waits until it is ready."""
    started: list[WorkerProcess] = []

    def start(
        queues: str = "light",
        concurrency: int = 1,
        beat: bool = False,
        pool: str = "prefork",
        **env: str,
    ) -> WorkerProcess:
        """`beat=True` also runs the periodic scheduler (the job sweeper) in the worker."""
        log_path = tmp_path / f"worker-{len(started)}.log"
        command = processes.celery_worker_command(
            queues,
            name=f"test{len(started)}-{os.getpid()}@%h",
            concurrency=concurrency,
            pool=pool,
        )
        if beat:
            command += ["--beat", "--schedule", str(tmp_path / f"beat-{len(started)}")]
        process = subprocess.Popen(
            command,
            env=worker_environment(**env),
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = WorkerProcess(process=process, log_path=log_path)
        started.append(worker)
        processes.wait_for_log(log_path, "ready.", process, timeout=60)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory) -> Iterator[str]:
    """A real S3-protocol server (SeaweedFS) that checks SigV4 signatures."""
    process = None
    if not processes.s3_is_up():
        workdir = tmp_path_factory.mktemp("seaweedfs")
        log = workdir / "weed.log"
        process = subprocess.Popen(
            processes.seaweedfs_command(workdir),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(log.read_text())
            return processes.s3_is_up()

        processes.wait_until(answers, "SeaweedFS", timeout=60, interval=0.2)
    yield f"http://127.0.0.1:{S3_PORT}"
    if process is not None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client of the test SeaweedFS, with its credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
    )


@pytest.fixture
def s3_storage(seaweedfs, settings) -> Iterator[dict[str, str]]:
    """Point this process and (through the returned env) workers at a fresh S3 bucket."""

    from apps.jobs.storage import get_storage

    bucket = f"phonos-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {
        "PHONOS_S3_BUCKET": bucket,
        "PHONOS_S3_ENDPOINT_URL": seaweedfs,
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
    }
    s3 = s3_client(seaweedfs)
    for _ in range(50):  # the filer may still be joining the cluster right after start
        try:
            s3.create_bucket(Bucket=bucket)
            break
        except Exception:
            time.sleep(0.2)
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update({key: value for key, value in env.items() if key.startswith("AWS_")})
    settings.PHONOS_S3_BUCKET = bucket
    settings.PHONOS_S3_ENDPOINT_URL = seaweedfs
    get_storage.cache_clear()
    yield env
    get_storage.cache_clear()
    # Give the bucket's volumes back to the shared server.
    try:
        bucket_objects = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for page in bucket_objects:
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)
    except Exception:
        pass  # a test that broke the store must not also fail its teardown
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_esmfold(tmp_path_factory) -> Path:
    """A tiny, randomly initialised EsmForProteinFolding saved like real weights."""
    from workers.checkpoints import write_tiny_esmfold

    return write_tiny_esmfold(tmp_path_factory.mktemp("esmfold") / "tiny-esmfold")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Count the tests skipped for a missing dependency (`tests/optional.py`), so that an
    opted-out local run never reads as a full pass."""
    from tests.optional import SKIP_PREFIX

    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if SKIP_PREFIX in str(getattr(report, "longrepr", ""))
    ]
    if skipped:
        terminalreporter.write_sep(
            "!", f"{len(skipped)} skipped for a missing dependency (PHONOS_TEST_ALLOW_SKIPS=1)"
        )
