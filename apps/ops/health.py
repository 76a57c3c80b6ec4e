"""Readiness: can this process reach what it needs to serve? PostgreSQL, Redis and the object
store, each checked in its own thread against one short deadline, so a store that hangs
(a dropped packet, a full disk) makes the probe answer 503 in time rather than hang it."""

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings

CHECK_TIMEOUT_SECONDS = 2.0


@dataclass
class ComponentResult:
    ok: bool
    latency_ms: int
    detail: str = ""

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "ok" if self.ok else "failing",
            "latency_ms": self.latency_ms,
        }
        if self.detail:
            body["detail"] = self.detail
        return body


def _database_check() -> str:
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # this thread's own connection; nothing else would close it
    return ""


@cache
def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
    )


def _redis_check() -> str:
    if not settings.REDIS_URL:
        return "not configured (embedded default)"
    _redis_client(settings.REDIS_URL).ping()
    return ""


@cache
def _s3_client(endpoint_url: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        config=Config(
            connect_timeout=CHECK_TIMEOUT_SECONDS,
            read_timeout=CHECK_TIMEOUT_SECONDS,
            retries={"max_attempts": 1},
        ),
    )


def _object_store_check() -> str:
    if settings.PHONOS_S3_BUCKET:
        _s3_client(settings.PHONOS_S3_ENDPOINT_URL, settings.PHONOS_S3_REGION).head_bucket(
            Bucket=settings.PHONOS_S3_BUCKET
        )
        return f"s3 bucket {settings.PHONOS_S3_BUCKET}"
    directory = settings.PHONOS_STORAGE_DIR
    if not directory.is_dir() or not os.access(directory, os.W_OK):
        raise OSError(f"storage directory {directory} is missing or not writable")
    return "local directory"


CHECKS: dict[str, Callable[[], str]] = {
    "database": _database_check,
    "redis": _redis_check,
    "object_store": _object_store_check,
}


def readiness_check() -> dict[str, ComponentResult]:
    results: dict[str, ComponentResult] = {}
    started = time.monotonic()

    def run(name: str, check: Callable[[], str]) -> None:
        began = time.monotonic()
        try:
            detail = check()
        except Exception as error:  # any failure of any client means "not ready"
            results[name] = ComponentResult(
                ok=False,
                latency_ms=int((time.monotonic() - began) * 1000),
                detail=f"{type(error).__name__}: {error}"[:300],
            )
        else:
            results[name] = ComponentResult(
                ok=True, latency_ms=int((time.monotonic() - began) * 1000), detail=detail
            )

    threads = [
        threading.Thread(target=run, args=(name, check), daemon=True, name=f"ready-{name}")
        for name, check in CHECKS.items()
    ]
    for thread in threads:
        thread.start()
    deadline = started + CHECK_TIMEOUT_SECONDS + 0.5
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    waited = int((time.monotonic() - started) * 1000)
    return {
        name: results.get(name)
        or ComponentResult(ok=False, latency_ms=waited, detail="no answer in time")
        for name in CHECKS
    }
