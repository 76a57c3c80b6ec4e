from enum import StrEnum


class Queue(StrEnum):
    """Celery queues that are not a model's own (models name theirs in apps.jobs.registry)."""

    # Short, I/O-bound work on CPU nodes: webhook deliveries, sweepers.
    LIGHT = "light"
