"""`Prefer: wait=N` (RFC 7240) on POST /v1/predict: hold the answer until the job ends.

A waiting request holds its (sync) server thread, so each API process lets at most
PHONOS_PREFER_WAIT_MAX_REQUESTS of them wait at once; the next ones answer at once, as without
the header. A waiting request sleeps on the Redis pub/sub channel the event streams use
(apps.jobs.streams.EVENTS_CHANNEL, published on commit of every job event) and re-reads the
job's status when its id comes by, so an ended job answers within milliseconds and a waiting
request costs no database reads meanwhile. Without Redis it polls. docs/api.md has the figures.
"""

import logging
import re
import threading
import time
import uuid

import redis
from django.conf import settings

from apps.jobs.models import Job
from apps.jobs.streams import EVENTS_CHANNEL

logger = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60
# Without Redis (the embedded default) nothing wakes a waiting request: it polls.
POLL_SECONDS = 0.25
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)

_slots_lock = threading.Lock()
_slots_taken = 0


def prefer_wait_parse(header: str | None) -> int | None:
    """The seconds a `Prefer` header asks to wait, capped at 60; None when it asks none."""
    match = _PREFER_WAIT.search(header or "")
    if match is None:
        return None
    return min(int(match.group(1)), MAX_WAIT_SECONDS)


def _slot_take() -> bool:
    global _slots_taken
    with _slots_lock:
        if _slots_taken >= settings.PHONOS_PREFER_WAIT_MAX_REQUESTS:
            return False
        _slots_taken += 1
        return True


def _slot_give_back() -> None:
    global _slots_taken
    with _slots_lock:
        _slots_taken -= 1


def _has_ended(job_id: uuid.UUID) -> bool:
    status = Job.objects.filter(id=job_id).values_list("status", flat=True).first()
    return status is None or status in Job.TERMINAL


def job_end_wait(*, job_id: uuid.UUID, seconds: int) -> bool:
    """Wait up to `seconds` for the job to end; True if it did. False at once when this
    process already has its most waiting requests."""
    if _has_ended(job_id):
        return True
    if seconds <= 0 or not _slot_take():
        return False
    try:
        deadline = time.monotonic() + seconds
        if settings.REDIS_URL:
            try:
                return _wait_on_channel(job_id=job_id, deadline=deadline)
            except redis.RedisError:
                logger.warning("Prefer: wait lost Redis; polling job %s instead", job_id)
        return _wait_polling(job_id=job_id, deadline=deadline)
    finally:
        _slot_give_back()


def _wait_on_channel(*, job_id: uuid.UUID, deadline: float) -> bool:
    wanted = str(job_id)
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    try:
        with client.pubsub(ignore_subscribe_messages=True) as pubsub:
            pubsub.subscribe(EVENTS_CHANNEL)
            # Subscribed first, read second: an end committed in between is seen by the read.
            if _has_ended(job_id):
                return True
            while (remaining := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=min(remaining, 5.0))
                # A message for this job, or a quiet spell (a publish may have been lost).
                if message is None or message["data"].decode() == wanted:
                    if _has_ended(job_id):
                        return True
            return False
    finally:
        client.close()


def _wait_polling(*, job_id: uuid.UUID, deadline: float) -> bool:
    while time.monotonic() < deadline:
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))
        if _has_ended(job_id):
            return True
    return False
