"""Prometheus metrics, aggregated in Redis so that every process's figures add up.

API processes (several gunicorn workers per node, several nodes) and Celery workers each add
their events to one Redis hash, `phonos:metrics`, in one pipelined round trip per event; any
API process renders the whole picture at `GET /metrics` from that hash, plus the live figures
read at scrape time (queue lengths, workers ready). See docs/operations.md, "Metrics".

A recording that fails (Redis down) is logged and dropped: metrics never fail a request or a job.
"""

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from django.db import transaction
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from apps.jobs.availability import worker_presence_list

if TYPE_CHECKING:
    from apps.jobs.models import Job

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
def _client() -> redis.Redis | None:
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
    client = _client()
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


def http_request_observe(*, endpoint: str, status: int, seconds: float) -> None:
    _record(
        [
            (
                _field("phonos_http_requests_total", {"endpoint": endpoint, "status": str(status)}),
                1,
            ),
            *_histogram_increments(
                "phonos_http_request_duration_seconds", {"endpoint": endpoint}, seconds
            ),
        ]
    )


def job_finished_observe(*, job: "Job") -> None:
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


def credits_debited_observe(*, model: str, amount: int) -> None:
    """Count a job's charge once the transaction that debits it commits."""
    increments = [(_field("phonos_credits_debited_total", {"model": model}), amount)]
    transaction.on_commit(lambda: _record(increments))


def webhook_delivery_observe(*, succeeded: bool) -> None:
    outcome = "succeeded" if succeeded else "failed"
    _record([(_field("phonos_webhook_deliveries_total", {"outcome": outcome}), 1)])


# --- Live figures, read at scrape time ---------------------------------------------------------


def celery_queues() -> list[str]:
    """Every queue the code routes to: the models' own and the housekeeping ones."""
    from apps.common.queues import Queue
    from apps.jobs.catalog import MODELS

    return sorted({spec.queue for spec in MODELS.values()} | {str(queue) for queue in Queue})


# --- Rendering -----------------------------------------------------------------------------------


class _RedisCollector:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        from apps.jobs.catalog import MODELS

        counters: dict[str, dict[tuple, float]] = defaultdict(dict)
        buckets: dict[str, dict[tuple, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        sums: dict[str, dict[tuple, float]] = defaultdict(dict)
        for raw_field, raw_value in self.client.hgetall(METRICS_KEY).items():
            try:
                name, label_pairs, *suffix = json.loads(raw_field)
                definition = DEFINITIONS[name]
            except (ValueError, KeyError):
                continue  # a field from another version of Phonos
            labels = dict(label_pairs)
            values = tuple(labels.get(label, "") for label in definition.labels)
            value = float(raw_value)
            if not suffix:
                counters[name][values] = value
            elif suffix[0] == "bucket":
                buckets[name][values][suffix[1]] = value
            elif suffix[0] == "sum":
                sums[name][values] = value

        for name, definition in DEFINITIONS.items():
            if definition.kind == "counter":
                counter = CounterMetricFamily(
                    name, definition.documentation, labels=definition.labels
                )
                for values, value in sorted(counters[name].items()):
                    counter.add_metric(list(values), value)
                yield counter
                continue
            histogram = HistogramMetricFamily(
                name, definition.documentation, labels=definition.labels
            )
            for values, counts in sorted(buckets[name].items()):
                cumulative, points = 0.0, []
                for le in definition.buckets:
                    cumulative += counts.get(floatToGoString(le), 0.0)
                    points.append((floatToGoString(le), cumulative))
                histogram.add_metric(list(values), points, sum_value=sums[name].get(values, 0.0))
            yield histogram

        queues = celery_queues()
        pipeline = self.client.pipeline(transaction=False)
        for queue in queues:
            pipeline.llen(queue)
        depth = GaugeMetricFamily(
            "phonos_queue_depth", "Tasks waiting in each Celery queue.", labels=["queue"]
        )
        for queue, length in zip(queues, pipeline.execute(), strict=True):
            depth.add_metric([queue], length)
        yield depth

        ready = dict.fromkeys(MODELS, 0)
        for record in worker_presence_list():
            models = record.get("models")
            for model_id, state in (models if isinstance(models, dict) else {}).items():
                if isinstance(state, dict) and state.get("ready") is True:
                    ready[model_id] = ready.get(model_id, 0) + 1
        workers = GaugeMetricFamily(
            "phonos_workers_ready",
            "Live workers that report the model loaded and ready.",
            labels=["model"],
        )
        for model_id, count in sorted(ready.items()):
            workers.add_metric([model_id], count)
        yield workers


def metrics_render() -> bytes:
    """The Prometheus text exposition of every figure; raises redis.RedisError when Redis
    cannot be read (the scrape then fails, which is what Prometheus should see)."""
    registry = CollectorRegistry(auto_describe=False)
    client = _client()
    if client is not None:
        registry.register(_RedisCollector(client))
    return generate_latest(registry)
