import json
import logging
import time
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
    client = _broker_redis()
    try:
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
    except redis.RedisError:
        logger.warning("Could not read the broker's unacknowledged messages", exc_info=True)
        return {}
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
