import base64
import json
import logging
import time
import uuid
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


def task_push(
    name: str,
    *,
    args: list[str],
    queue: str,
    what: str,
    task_id: str,
    soft_time_limit: int,
    time_limit: int,
) -> bool:
    """`task_publish` for the submission's hot path: on a Redis broker, the message that
    `send_task` would publish, pushed with one LPUSH on a pooled connection. `send_task` spends
    0.57 ms of CPU per message, most of it in kombu's Redis transport, which builds a new Redis
    client for every publish, and in routing, declaring and retry wrappers that a plain push to
    a model's own queue does not need; this spends about a fifth of that (docs/benchmarks.md).

    The message is Celery's own: its task protocol 2 (`app.amqp.as_task_v2`, with the
    `before_task_publish` signal that carries the request id), in the envelope kombu's Redis
    transport writes (`Channel.prepare_message` and `_inplace_augment_message`: a base64 JSON
    body, a delivery tag, the anonymous exchange routed by queue name) on the queue's list for
    priority 0, which is the list named after the queue. No worker can tell it from a
    published one (the worker tests consume both). Outside a Redis broker (the embedded
    default), `task_publish`. Answers as `task_publish` does."""
    from celery import signals

    from phonos.celery import app as celery_app

    options = {"task_id": task_id, "soft_time_limit": soft_time_limit, "time_limit": time_limit}
    if not _broker_is_redis():
        return task_publish(name, args=args, queue=queue, what=what, **options)
    try:
        headers, properties, body, _ = celery_app.amqp.as_task_v2(
            task_id,
            name,
            args=cast(Any, args),  # a list, as send_task hands it on (its argsrepr shows it)
            kwargs={},
            reply_to=celery_app.thread_oid,
            ignore_result=cast(bool, None),  # as send_task: the task's own setting decides
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
        )
        signals.before_task_publish.send(
            sender=name,
            body=body,
            exchange="",
            routing_key=queue,
            declare=None,
            headers=headers,
            properties=properties,
            retry_policy=PUBLISH_RETRY_POLICY,
        )
        envelope = {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": 2,  # persistent, as Celery's default queues publish
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        _broker_redis().lpush(queue, json.dumps(envelope))
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


def _broker_is_redis() -> bool:
    """Whether the broker is Redis (not the embedded default's SQLite)."""
    return settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://"))


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
    if not _broker_is_redis():
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
    if not _broker_is_redis():
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
