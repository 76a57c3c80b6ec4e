import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any, cast

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

# One quick retry: a broker that is down must not hold a request or an on-commit hook for long.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}


class Queue(StrEnum):
    """Celery queues that are not a model's own (models name theirs in apps.jobs.registry)."""

    # Short, I/O-bound work on CPU nodes: webhook deliveries, sweepers.
    LIGHT = "light"


def task_publish(name: str, *, args: list[str], queue: str, what: str, **options: Any) -> bool:
    """Publish a task. A broker that is down is logged, not raised, and answers False: each
    caller's sweeper publishes again whatever never arrived. `what` names it in the log."""
    from phonos.celery import app as celery_app

    try:
        celery_app.send_task(
            name, args=args, queue=queue, retry=True, retry_policy=PUBLISH_RETRY_POLICY, **options
        )
    except Exception:
        logger.warning("Could not enqueue %s; the sweeper will retry", what, exc_info=True)
        return False
    return True


# Where kombu's Redis transport keeps a message from its delivery to a worker until the worker
# acknowledges it: the message by delivery tag, and the delivery time by tag (kombu's defaults;
# Phonos sets no key prefix).
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
UNACKED_SCAN_LIMIT = 1000


@cache
def _broker_redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.CELERY_BROKER_URL,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
    )


def broker_unacked(*, older_than_seconds: float) -> dict[str, str]:
    """Task id -> delivery tag of the messages a worker took off the Redis broker more than
    `older_than_seconds` ago and has not acknowledged (at most UNACKED_SCAN_LIMIT, oldest first).

    A worker killed after taking a message but before its task started leaves the message
    there until the broker's visibility timeout (hours: it must outlast the longest job), with
    the job still pending: the sweeper uses this to hand such a job on (docs/workers.md). The
    embedded default's SQLite broker has no such store: nothing is found there, nor while the
    broker is down."""
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return {}
    try:
        return _unacked_read(older_than_seconds)
    except redis.RedisError:
        logger.warning("Could not read the broker's unacknowledged messages", exc_info=True)
        return {}


def _unacked_read(older_than_seconds: float) -> dict[str, str]:
    client = _broker_redis()
    tags = cast(
        list[str],
        client.zrangebyscore(
            UNACKED_INDEX_KEY,
            "-inf",
            time.time() - older_than_seconds,
            start=0,
            num=UNACKED_SCAN_LIMIT,
        ),
    )
    messages = cast(list[str | None], client.hmget(UNACKED_KEY, tags)) if tags else []
    held: dict[str, str] = {}
    for tag, raw in zip(tags, messages, strict=True):
        if raw is None:
            continue  # acknowledged meanwhile
        # An unacknowledged entry is [message, exchange, routing key].
        if (task_id := _task_id(raw, envelope=True)) is not None:
            held[task_id] = tag
    return held


# kombu's Redis transport keeps a queue's messages by priority in separate lists: the queue's
# own name for priority 0 (every message Phonos publishes), the name, this separator and the
# step for the others (Celery's default steps).
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


@dataclass(frozen=True)
class BrokerState:
    """The broker as the sweeper reads it, in one round trip: the task ids of every message
    workers hold unacknowledged, and for each queue that could be read the task id of the
    message it delivers next (None: the queue is empty)."""

    held: frozenset[str]
    oldest_waiting: dict[str, str | None]


def broker_state(queues: Iterable[str]) -> BrokerState | None:
    """The held messages and each queue's oldest waiting one (kombu pushes on the left and pops
    on the right); None where the held ones cannot all be told: not a Redis broker, the broker
    down, or more held than UNACKED_SCAN_LIMIT. A queue with messages waiting at another
    priority, or whose oldest is no Celery task, is left out."""
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return None
    queues = list(queues)
    try:
        pipeline = _broker_redis().pipeline(transaction=False)
        pipeline.zcard(UNACKED_INDEX_KEY)
        for queue in queues:
            for step in _PRIORITY_STEPS:
                pipeline.llen(f"{queue}{_PRIORITY_SEPARATOR}{step}")
            pipeline.lindex(queue, -1)
        held_count, *replies = pipeline.execute()
        if held_count >= UNACKED_SCAN_LIMIT:
            return None
        held = _unacked_read(0) if held_count else {}
    except redis.RedisError:
        logger.warning("Could not read the broker's queues", exc_info=True)
        return None
    per_queue = len(_PRIORITY_STEPS) + 1
    oldest_waiting: dict[str, str | None] = {}
    for index, queue in enumerate(queues):
        *others, oldest = replies[index * per_queue : (index + 1) * per_queue]
        oldest_id = _task_id(oldest) if oldest is not None else None
        if not any(others) and (oldest is None or oldest_id is not None):
            oldest_waiting[queue] = oldest_id
    return BrokerState(held=frozenset(held), oldest_waiting=oldest_waiting)


def _task_id(raw: str, *, envelope: bool = False) -> str | None:
    """The Celery task id of a message as kombu stores it (in an `envelope` list first, for the
    unacknowledged ones); None for anything else."""
    try:
        message = json.loads(raw)
        task_id = (message[0] if envelope else message)["headers"]["id"]
    except (TypeError, ValueError, LookupError):
        return None
    return task_id if isinstance(task_id, str) else None


def broker_unacked_forget(tag: str) -> None:
    """Drop an unacknowledged message that was published again, so the broker's visibility
    timeout does not deliver it a second time (harmless if it did: a job is claimed once)."""
    try:
        pipeline = _broker_redis().pipeline()
        pipeline.hdel(UNACKED_KEY, tag)
        pipeline.zrem(UNACKED_INDEX_KEY, tag)
        pipeline.execute()
    except redis.RedisError:
        logger.warning("Could not drop the broker's unacknowledged message %s", tag, exc_info=True)
