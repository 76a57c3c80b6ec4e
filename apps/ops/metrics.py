"""Prometheus metrics, aggregated in Redis so that every process's figures add up.

API processes (several gunicorn workers per node, several nodes) and Celery workers each add
their events to one Redis hash, `phonos:metrics`: a worker in one round trip per event, an API
request through its process's counter buffer, which reaches Redis with the next rate-limit
round trip or within PHONOS_USAGE_FLUSH_SECONDS. Any API process renders the whole picture at
`GET /metrics` from that hash (its own buffer sent first), plus the live figures read at scrape
time (queue lengths, workers ready). See docs/operations.md, "Metrics".

A recording that fails (Redis down) is logged and dropped: metrics never fail a request or a job.
"""

import json
from collections import defaultdict
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from apps.common.counters import counters_flush
from apps.common.metrics import DEFINITIONS, METRICS_KEY, redis_client
from apps.jobs.availability import worker_presence_list

# --- Live figures, read at scrape time ---------------------------------------------------------


def celery_queues() -> list[str]:
    """Every queue the code routes to: the models' own and the housekeeping ones."""
    from apps.common.queues import Queue
    from apps.jobs.registry import MODELS

    return sorted({spec.queue for spec in MODELS.values()} | {str(queue) for queue in Queue})


# --- Rendering -----------------------------------------------------------------------------------


class _RedisCollector:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        from apps.jobs.registry import MODELS

        counters: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
        buckets: dict[str, dict[tuple[str, ...], dict[str, float]]] = defaultdict(
            lambda: defaultdict(dict)
        )
        sums: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
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
    counters_flush()  # this process's buffered requests; other processes' lag by at most a flush
    registry = CollectorRegistry(auto_describe=False)
    client = redis_client()
    if client is not None:
        registry.register(_RedisCollector(client))
    return generate_latest(registry)
