"""Counters buffered in this process and added to one Redis hash in the next round trip.

A request's usage is known only once its response is ready, after the rate limit's round trip
to Redis has been made: rather than pay a second round trip, its increments wait here and ride
along with the next request's rate-limit script (apps.common.ratelimit). A background thread
sends whatever is still waiting every PHONOS_USAGE_FLUSH_SECONDS, so an idle process does not
hold counters back. A process killed outright loses what it buffered since its last send: at
most that interval's counters, never anything the database holds (jobs, ledger).

Common knows only "hash field → integer increment"; apps.usage names the hash and the fields
and folds the hash into PostgreSQL.
"""

import atexit
import logging
import os
import threading
import time
from collections import Counter

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

PENDING_HASH = "phonos:usage:pending"

_lock = threading.Lock()
_buffer: Counter[str] = Counter()
_flusher_pid: int | None = None


def counters_add(increments: dict[str, int]) -> None:
    """Buffer increments for the pending hash; the caller has checked that Redis is configured."""
    with _lock:
        _buffer.update(increments)
    _flusher_ensure()


def counters_drain() -> dict[str, int]:
    """Take every buffered increment; give them back with counters_restore if sending fails."""
    global _buffer
    with _lock:
        if not _buffer:
            return {}
        drained, _buffer = _buffer, Counter()
    return dict(drained)


def counters_restore(increments: dict[str, int]) -> None:
    with _lock:
        _buffer.update(increments)


def counters_queue(pipeline: redis.client.Pipeline, increments: dict[str, int]) -> None:
    for field, amount in increments.items():
        pipeline.hincrby(PENDING_HASH, field, amount)


def counters_flush() -> bool:
    """Send what is buffered now, in one round trip; False (and kept) if Redis failed."""
    from apps.common.ratelimit import redis_client

    if not settings.REDIS_URL:
        return True
    increments = counters_drain()
    if not increments:
        return True
    try:
        pipeline = redis_client().pipeline(transaction=False)
        counters_queue(pipeline, increments)
        pipeline.execute()
    except redis.RedisError:
        counters_restore(increments)
        logger.warning("Could not send usage counters; keeping them for the next try")
        return False
    return True


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
