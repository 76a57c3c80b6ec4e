"""Recording Prometheus figures: every API and worker process adds its events to one Redis hash
(`phonos:metrics`), so any API process renders the whole picture (`apps.ops.metrics`). A
worker's events go in one round trip each; an API request's go into this process's counter
buffer (apps.common.counters) and reach Redis with the next rate-limit round trip or the
flusher's. Nothing here knows a domain model: callers pass plain facts.
"""

import datetime
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Protocol

import redis
from django.conf import settings
from django.db import transaction
from prometheus_client.utils import floatToGoString

from apps.common.counters import counters_add


class FinishedJob(Protocol):
    """What `job_finished_observe` reads of a job (the jobs app's `Job` has it)."""

    model: str
    status: Any
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    metadata: Any


logger = logging.getLogger(__name__)

METRICS_KEY = "phonos:metrics"
REDIS_TIMEOUT_SECONDS = 0.5
# Devices (the runner's `metadata.device`) that count towards GPU-seconds.
GPU_DEVICE_PREFIXES = ("cuda", "gpu")
INF = float("inf")


@dataclass(frozen=True)
class Definition:
    kind: str  # "counter" or "histogram"
    documentation: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


DEFINITIONS: dict[str, Definition] = {
    "phonos_http_requests_total": Definition(
        "counter", "HTTP requests answered, by URL route and status.", ("endpoint", "status")
    ),
    "phonos_http_request_duration_seconds": Definition(
        "histogram",
        "Time to answer an HTTP request, by URL route.",
        ("endpoint",),
        (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, INF),
    ),
    "phonos_jobs_total": Definition(
        "counter", "Jobs that reached a final status.", ("model", "status")
    ),
    "phonos_job_queue_seconds": Definition(
        "histogram",
        "From submission to the job's first start on a worker.",
        ("model",),
        (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, INF),
    ),
    "phonos_job_run_seconds": Definition(
        "histogram",
        "From a job's first start to its final status (retries after a lost worker included).",
        ("model",),
        (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, INF),
    ),
    "phonos_gpu_seconds_total": Definition(
        "counter", "Run seconds of completed jobs that ran on a GPU.", ("model",)
    ),
    "phonos_webhook_deliveries_total": Definition(
        "counter", "Webhook delivery attempts, by outcome (succeeded, failed).", ("outcome",)
    ),
    "phonos_credits_debited_total": Definition(
        "counter", "Credits charged for submitted jobs (refunds are not subtracted).", ("model",)
    ),
}


@cache
def redis_client() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None  # the embedded default has no Redis: metrics are not recorded
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )


_last_failure_logged = 0.0


def _field(name: str, labels: dict[str, str], *suffix: str) -> str:
    return json.dumps([name, sorted(labels.items()), *suffix], separators=(",", ":"))


def _histogram_increments(
    name: str, labels: dict[str, str], value: float
) -> list[tuple[str, float]]:
    """One bucket (the smallest that holds the value; rendering makes them cumulative) and
    the sum."""
    bucket = next(le for le in DEFINITIONS[name].buckets if value <= le)
    return [
        (_field(name, labels, "bucket", floatToGoString(bucket)), 1),
        (_field(name, labels, "sum"), value),
    ]


def _record(increments: Iterable[tuple[str, float]]) -> None:
    global _last_failure_logged
    client = redis_client()
    if client is None:
        return
    try:
        pipeline = client.pipeline(transaction=False)
        for field, amount in increments:
            if float(amount).is_integer():
                pipeline.hincrby(METRICS_KEY, field, int(amount))
            else:
                pipeline.hincrbyfloat(METRICS_KEY, field, amount)
        pipeline.execute()
    except redis.RedisError:
        # At most one line a minute while Redis is down, not one per request.
        if time.monotonic() - _last_failure_logged > 60:
            _last_failure_logged = time.monotonic()
            logger.warning("Could not record metrics in Redis", exc_info=True)


# --- Recording (one call at each place an event happens) ---------------------------------------


@lru_cache(maxsize=4096)
def _request_fields(endpoint: str, status: int, bucket: float) -> tuple[str, str, str]:
    """The hash fields of one request's count, duration bucket and duration sum: a few routes
    and statuses, so built once each."""
    labels = {"endpoint": endpoint}
    duration = "phonos_http_request_duration_seconds"
    return (
        _field("phonos_http_requests_total", {**labels, "status": str(status)}),
        _field(duration, labels, "bucket", floatToGoString(bucket)),
        _field(duration, labels, "sum"),
    )


_REQUEST_BUCKETS = DEFINITIONS["phonos_http_request_duration_seconds"].buckets


def http_request_observe(*, endpoint: str, status: int, seconds: float) -> None:
    """Buffered in this process (apps.common.counters): the counts ride along with the next
    rate-limit round trip, or the flusher's within PHONOS_USAGE_FLUSH_SECONDS, rather than
    costing every request a round trip of its own."""
    if not settings.REDIS_URL:
        return  # the embedded default has no Redis: metrics are not recorded
    bucket = next(le for le in _REQUEST_BUCKETS if seconds <= le)
    total, bucket_field, sum_field = _request_fields(endpoint, status, bucket)
    counters_add(
        {
            (METRICS_KEY, total): 1,
            (METRICS_KEY, bucket_field): 1,
            (METRICS_KEY, sum_field): float(seconds),
        }
    )


def job_finished_observe(*, job: FinishedJob) -> None:
    """Count a job that has just reached a final status, once that transaction commits. Call
    it with the job as the final state wrote it."""
    increments: list[tuple[str, float]] = [
        (_field("phonos_jobs_total", {"model": job.model, "status": str(job.status)}), 1)
    ]
    if job.started_at is not None:
        labels = {"model": job.model}
        queued = max((job.started_at - job.created_at).total_seconds(), 0.0)
        increments += _histogram_increments("phonos_job_queue_seconds", labels, queued)
        if job.finished_at is not None:
            run = max((job.finished_at - job.started_at).total_seconds(), 0.0)
            increments += _histogram_increments("phonos_job_run_seconds", labels, run)
            device = str((job.metadata or {}).get("device") or "")
            if job.status == "completed" and device.startswith(GPU_DEVICE_PREFIXES):
                increments.append((_field("phonos_gpu_seconds_total", labels), run))
    transaction.on_commit(lambda: _record(increments))


@lru_cache(maxsize=64)
def _credits_field(model: str) -> str:
    return _field("phonos_credits_debited_total", {"model": model})


def credits_debited_observe(*, model: str, amount: int) -> None:
    """Count a job's charge once the transaction that debits it commits: buffered like the
    request metrics (a submission makes no round trip of its own for it)."""
    if not settings.REDIS_URL:
        return
    increments = {(METRICS_KEY, _credits_field(model)): amount}
    transaction.on_commit(lambda: counters_add(increments))


def webhook_delivery_observe(*, succeeded: bool) -> None:
    outcome = "succeeded" if succeeded else "failed"
    _record([(_field("phonos_webhook_deliveries_total", {"outcome": outcome}), 1)])
