"""Counters buffered in this process and added to one Redis hash in the next round trip.

A request's usage is known only once its response is ready, after the rate limit's round trip
to Redis has been made: rather than pay a second round trip, its increments wait here and ride
along with the next request's rate-limit script (apps.common.ratelimit). A background thread
sends whatever is still waiting every PHONOS_USAGE_FLUSH_SECONDS, so an idle process does not
hold counters back. A process killed outright loses what it buffered since its last send: at
most that interval's counters, never anything the database holds (jobs, ledger).

Common knows only "hash, field → increment"; apps.usage names its hash and fields and folds
them into PostgreSQL; apps.common.metrics buffers the request metrics here the same way, so a
request makes no round trip of its own for them either (a scrape of /metrics sees another
process's requests within that interval). Integer increments go out as HINCRBY, float ones
(the metrics' latency sums) as HINCRBYFLOAT.
"""

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

PENDING_HASH = "phonos:usage:pending"

_lock = threading.Lock()
# (hash, field) → amount: an int, or a float for a sum of seconds.
Increments = dict[tuple[str, str], int | float]
_buffer: Increments = {}
_flusher_pid: int | None = None


def _merge(into: Increments, increments: Mapping[tuple[str, str], int | float]) -> None:
    for key, amount in increments.items():
        into[key] = into.get(key, 0) + amount


# Without Redis (the embedded default) a hash's increments go to its local sink, a function
# that stores them (apps.usage adds its hash to the database): the same buffer and flusher, so
# that no request waits on that write either.
Sink = Callable[[dict[str, int | float]], None]
_local_sinks: dict[str, Sink] = {}


def counters_local_sink(hash_name: str, sink: Sink) -> None:
    """Where `hash_name`'s increments go without Redis; without a sink they are not kept."""
    _local_sinks[hash_name] = sink


def counters_add(increments: Mapping[tuple[str, str], int | float]) -> None:
    """Buffer (hash, field) increments, for Redis or, without it, for the hash's local sink."""
    with _lock:
        _merge(_buffer, increments)
    _flusher_ensure()


def counters_drain() -> Increments:
    """Take every buffered increment; give them back with counters_restore if sending fails."""
    global _buffer
    with _lock:
        if not _buffer:
            return {}
        drained, _buffer = _buffer, {}
    return drained


def counters_restore(increments: Increments) -> None:
    with _lock:
        _merge(_buffer, increments)


def counters_queue(pipeline: redis.client.Pipeline, increments: Increments) -> None:
    for (hash_name, field), amount in increments.items():
        if isinstance(amount, int):
            pipeline.hincrby(hash_name, field, amount)
        else:
            pipeline.hincrbyfloat(hash_name, field, amount)


def counters_flush() -> bool:
    """Send what is buffered now, in one round trip; False (and kept) if Redis failed."""
    from apps.common.ratelimit import redis_client

    increments = counters_drain()
    if not increments:
        return True
    if not settings.REDIS_URL:
        return _local_flush(increments)
    try:
        pipeline = redis_client().pipeline(transaction=False)
        counters_queue(pipeline, increments)
        pipeline.execute()
    except redis.RedisError:
        counters_restore(increments)
        logger.warning("Could not send usage counters; keeping them for the next try")
        return False
    return True


def _local_flush(increments: Increments) -> bool:
    by_hash: dict[str, dict[str, int | float]] = {}
    for (hash_name, field), amount in increments.items():
        by_hash.setdefault(hash_name, {})[field] = amount
    kept = True
    for hash_name, fields in by_hash.items():
        sink = _local_sinks.get(hash_name)
        if sink is None:
            continue
        try:
            sink(fields)
        except Exception:
            counters_restore({(hash_name, field): amount for field, amount in fields.items()})
            logger.exception(
                "Could not store the %s counters; keeping them for the next try", hash_name
            )
            kept = False
    return kept


def _flush_forever() -> None:
    while True:
        time.sleep(settings.PHONOS_USAGE_FLUSH_SECONDS)
        try:
            counters_flush()
        except Exception:
            logger.exception("Usage counter flush failed")


def _flusher_ensure() -> None:
    """One flushing thread per process, started in the process that buffers (a thread started
    before gunicorn forks its workers would not exist in them)."""
    global _flusher_pid
    if _flusher_pid == os.getpid():
        return
    with _lock:
        if _flusher_pid == os.getpid():
            return
        _flusher_pid = os.getpid()
    threading.Thread(target=_flush_forever, name="usage-counters", daemon=True).start()
    # A graceful exit (gunicorn's max-requests, a deploy's SIGTERM) sends the rest.
    atexit.register(counters_flush)
