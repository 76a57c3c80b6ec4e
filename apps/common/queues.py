import json
import logging
import time
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
        try:
            task_id = json.loads(raw)[0]["headers"]["id"]
        except (TypeError, ValueError, LookupError):
            continue  # not a Celery task message
        if isinstance(task_id, str):
            held[task_id] = tag
    return held


# kombu's Redis transport keeps a queue's messages by priority in separate lists: the queue's
# own name for priority 0 (every message Phonos publishes), the name, this separator and the
# step for the others (Celery's default steps).
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


@dataclass(frozen=True)
class QueueHead:
    """A queue in the broker as the sweeper reads it: the task ids of the messages that wait in
    it (none: it is empty), and every message workers hold unacknowledged, of any queue."""

    oldest_waiting: str | None
    held: frozenset[str]


def broker_queue_head(queue: str) -> QueueHead | None:
    """The task id of the message that `queue` delivers next (its oldest: kombu pushes on the
    left and pops on the right) and the task ids that workers hold; None where that cannot be
    told: not a Redis broker, the broker down, messages waiting at another priority or more held
    than UNACKED_SCAN_LIMIT."""
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return None
    client = _broker_redis()
    try:
        pipeline = client.pipeline(transaction=False)
        for step in _PRIORITY_STEPS:
            pipeline.llen(f"{queue}{_PRIORITY_SEPARATOR}{step}")
        pipeline.lindex(queue, -1)
        pipeline.zcard(UNACKED_INDEX_KEY)
        *others, oldest, held_count = pipeline.execute()
        if any(others) or held_count >= UNACKED_SCAN_LIMIT:
            return None
        held = _unacked_read(0) if held_count else {}
    except redis.RedisError:
        logger.warning("Could not read the broker's queue %s", queue, exc_info=True)
        return None
    oldest_id = _task_id(oldest) if oldest is not None else None
    if oldest is not None and oldest_id is None:
        return None  # not a Celery task message: nothing to reason from
    return QueueHead(oldest_waiting=oldest_id, held=frozenset(held))


def _task_id(raw: str) -> str | None:
    try:
        task_id = json.loads(raw)["headers"]["id"]
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
