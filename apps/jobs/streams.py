"""Job event streams (Server-Sent Events) that cannot starve the API.

In production the stream paths are routed to their own ASGI process (`phonos.asgi`, uvicorn;
see docs/serving.md), where an open stream costs a coroutine, not a thread. A stream re-reads
the job's events from the database whenever it is woken: by a Redis pub/sub message published
on commit of each `JobEvent`, or by a slow fallback poll, so a lost message only delays an
event, never loses it. Without Redis (the embedded default) streams simply poll.

Under WSGI (the test live server, or a gunicorn reached directly) the same views answer with
a blocking generator, so they keep working there, one thread per stream.

Each account holds at most `PHONOS_MAX_STREAMS_PER_ACCOUNT` streams, counted in a Redis
sorted set whose scores are lease expiries: a stream renews its lease while it runs and
removes it when it ends, and a process that dies without removing it frees the slot when the
lease runs out. Every stream ends after `PHONOS_STREAM_MAX_SECONDS`; clients reconnect with
`Last-Event-ID`.
"""

import asyncio
import functools
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import redis
import redis.asyncio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.db.models import Max
from django.http import HttpRequest, StreamingHttpResponse

from apps.common.exceptions import TooManyRequests
from apps.common.ratelimit import redis_client
from apps.jobs.models import Job, JobEvent

logger = logging.getLogger(__name__)

EVENTS_CHANNEL = "phonos:job-events"
KEEPALIVE_SECONDS = 15
# With Redis, wake-ups come by pub/sub and this poll only covers a lost message.
FALLBACK_POLL_SECONDS = 5.0
# Without Redis (embedded default) nothing wakes a stream: poll.
POLL_SECONDS = 1.0
# A slot not renewed for this long is free again (its process died without releasing it).
SLOT_LEASE_SECONDS = 60
SLOT_RENEW_SECONDS = 15
SLOT_RETRY_AFTER_SECONDS = 10
# Events sent per database read; a job with more sends them over several reads.
BATCH_SIZE = 500
# Database work of the ASGI streams runs on these few threads, so 200 open streams hold a few
# PostgreSQL connections instead of one each (Django connections belong to a thread).
STREAM_DB_THREADS = 4

_ASCII_DIGITS = re.compile(r"[0-9]+")
# Longer than any id PostgreSQL can hand out; parsing it would only waste CPU.
_MAX_ID_DIGITS: Final = 19

RETRY_FRAME = "retry: 2000\n\n"
KEEPALIVE_FRAME = ": keep-alive\n\n"
TIMEOUT_FRAME = 'event: timeout\ndata: {"message": "Reconnect to keep following this job"}\n\n'


# --- Resuming ----------------------------------------------------------------------------------
def last_event_id_parse(raw: str | None) -> int:
    """`Last-Event-ID` as an event id. Ours are ASCII digits; anything else (`²` passes
    str.isdigit() but not int()) was not sent by us and replays the stream from the start."""
    raw = (raw or "").strip()
    if not _ASCII_DIGITS.fullmatch(raw):
        return 0
    if len(raw) > _MAX_ID_DIGITS:
        return 10**_MAX_ID_DIGITS
    return int(raw)


def job_event_resume_point(*, job: Job, last_event_id: str | None) -> int:
    """The id after which to send events: Last-Event-ID clamped to the job's last event, so an
    absurd id still gets the events that come next."""
    last = JobEvent.objects.filter(job_id=job.id).aggregate(last=Max("id"))["last"] or 0
    return min(last_event_id_parse(last_event_id), last)


# --- Wake-ups ----------------------------------------------------------------------------------
def job_event_announce(*, job_id: uuid.UUID | str) -> None:
    """Wake the streams following this job; called on commit of each JobEvent but a job's first
    (apps.jobs.services._job_create: no stream can follow a job yet). A failed
    publish costs only latency: the streams' fallback poll finds the event."""
    if not settings.REDIS_URL:
        return
    try:
        redis_client().publish(EVENTS_CHANNEL, str(job_id))
    except redis.RedisError:
        logger.warning("Could not announce an event of job %s; streams will poll for it", job_id)


class _WakeHub:
    """One Redis subscription per process, fanned out to the streams waiting on each job."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None

    def register(self, job_id: str) -> asyncio.Event:
        if settings.REDIS_URL and (self._listener is None or self._listener.done()):
            self._listener = self.loop.create_task(self._listen())
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        return event

    def unregister(self, job_id: str, event: asyncio.Event) -> None:
        waiting = self._waiters.get(job_id)
        if waiting is not None:
            waiting.discard(event)
            if not waiting:
                del self._waiters[job_id]

    def _wake(self, job_ids: list[str] | None = None) -> None:
        for job_id in self._waiters if job_ids is None else job_ids:
            for event in self._waiters.get(job_id, ()):
                event.set()

    async def _listen(self) -> None:
        while True:
            client = redis.asyncio.Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=30
            )
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(EVENTS_CHANNEL)
                    # Events may have been written while no subscription was listening.
                    self._wake()
                    while True:
                        message = await pubsub.get_message(timeout=10)
                        if message is not None and message["type"] == "message":
                            self._wake([message["data"].decode()])
            except (redis.RedisError, OSError):
                logger.warning("Stream wake-ups lost their Redis subscription; streams poll")
                await asyncio.sleep(2)
            finally:
                await client.aclose()


_hub: _WakeHub | None = None


def _wake_hub() -> _WakeHub:
    global _hub
    loop = asyncio.get_running_loop()
    if _hub is None or _hub.loop is not loop:
        _hub = _WakeHub(loop)
    return _hub


# --- Concurrent streams per account ------------------------------------------------------------
# KEYS[1] the account's set; ARGV: stream id, limit, lease (ms). Expired leases are dropped
# first, so slots of a crashed process come back by themselves.
_SLOT_ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
_SLOT_RENEW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class StreamSlot:
    account_id: int
    stream_id: str
    # False when Redis was unreachable and the stream was let through uncounted.
    counted: bool = True

    @property
    def key(self) -> str:
        return f"phonos:streams:{self.account_id}"


class _LocalSlots:
    """The embedded default (no Redis): one stream process counts its own streams."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, dict[str, float]] = {}

    def acquire(self, slot: StreamSlot, limit: int) -> bool:
        now = time.monotonic()
        with self._lock:
            leases = self._leases.setdefault(slot.key, {})
            for stream_id in [s for s, expires in leases.items() if expires <= now]:
                del leases[stream_id]
            if len(leases) >= limit:
                return False
            leases[slot.stream_id] = now + SLOT_LEASE_SECONDS
            return True

    def renew(self, slot: StreamSlot) -> None:
        with self._lock:
            self._leases.setdefault(slot.key, {})[slot.stream_id] = (
                time.monotonic() + SLOT_LEASE_SECONDS
            )

    def release(self, slot: StreamSlot) -> None:
        with self._lock:
            self._leases.get(slot.key, {}).pop(slot.stream_id, None)


_local_slots = _LocalSlots()


def stream_slot_acquire(*, account_id: int) -> StreamSlot:
    """One of the account's stream slots, or TooManyRequests (429) when all are taken."""
    slot = StreamSlot(account_id=account_id, stream_id=uuid.uuid4().hex)
    limit = settings.PHONOS_MAX_STREAMS_PER_ACCOUNT
    if settings.REDIS_URL:
        try:
            granted = redis_client().eval(
                _SLOT_ACQUIRE, 1, slot.key, slot.stream_id, limit, SLOT_LEASE_SECONDS * 1000
            )
        except redis.RedisError:
            # Like the rate limiter: a broken cache must not stop paying customers.
            logger.warning("Stream slots unavailable; letting the stream through uncounted")
            return StreamSlot(account_id=account_id, stream_id=slot.stream_id, counted=False)
    else:
        granted = _local_slots.acquire(slot, limit)
    if not granted:
        raise TooManyRequests(
            f"This account already has {limit} open event streams; close one or retry later",
            error="Too many streams",
            reason="stream_limit",
            retry_after=SLOT_RETRY_AFTER_SECONDS,
        )
    return slot


def _slot_renew(slot: StreamSlot) -> None:
    if not slot.counted:
        return
    if not settings.REDIS_URL:
        _local_slots.renew(slot)
        return
    try:
        redis_client().eval(_SLOT_RENEW, 1, slot.key, slot.stream_id, SLOT_LEASE_SECONDS * 1000)
    except redis.RedisError:
        logger.warning("Could not renew stream slot %s", slot.stream_id)


def _slot_release(slot: StreamSlot) -> None:
    if not slot.counted:
        return
    if not settings.REDIS_URL:
        _local_slots.release(slot)
        return
    try:
        redis_client().zrem(slot.key, slot.stream_id)
    except redis.RedisError:
        logger.warning("Could not release stream slot %s; its lease will expire", slot.stream_id)


# --- Reading events ----------------------------------------------------------------------------
def _event_payload(job: Job, event: JobEvent) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "job_id": str(job.id),
        "status": event.status,
        "stage": event.stage,
        "progress": event.progress,
        "at": event.created_at.isoformat(),
    }
    if event.status == Job.Status.FAILED:
        payload["error"] = job.error
    if event.status == Job.Status.COMPLETED:
        payload["download_url"] = job.download_path
    return payload


@dataclass(frozen=True)
class EventBatch:
    frames: list[str]
    last_id: int
    # The stream has said everything it will: the job ended (or was deleted).
    finished: bool
    # More events are waiting beyond this batch: read again at once.
    more: bool


def job_event_batch(*, job: Job, after_id: int) -> EventBatch:
    """The SSE frames of the job's events after `after_id`, up to and including the terminal
    one."""
    events = list(
        JobEvent.objects.filter(job_id=job.id, id__gt=after_id).order_by("id")[:BATCH_SIZE]
    )
    if not events:
        # Nothing left to send: a terminal (or deleted) job has nothing more to come.
        state = Job.objects.filter(id=job.id).values("status", "deleted_at").first()
        ended = state is None or state["deleted_at"] is not None or state["status"] in Job.TERMINAL
        return EventBatch(frames=[], last_id=after_id, finished=ended, more=False)
    if any(event.status in Job.TERMINAL for event in events):
        job.refresh_from_db()
    frames = []
    for event in events:
        terminal = event.status in Job.TERMINAL
        name = event.status if terminal else "stage"
        frames.append(
            f"id: {event.id}\nevent: {name}\ndata: {json.dumps(_event_payload(job, event))}\n\n"
        )
        if terminal:
            return EventBatch(frames=frames, last_id=event.id, finished=True, more=False)
    return EventBatch(
        frames=frames, last_id=events[-1].id, finished=False, more=len(events) == BATCH_SIZE
    )


class _StreamClock:
    """The clocks both stream loops keep between batches: the deadline, the last frame sent
    (for keep-alives) and the last slot renewal."""

    def __init__(self) -> None:
        self.now = time.monotonic()
        self.deadline = self.now + settings.PHONOS_STREAM_MAX_SECONDS
        self.last_sent = self.last_renewed = self.now

    def after_batch(self, batch: EventBatch) -> tuple[list[str], bool, bool]:
        """After a batch that did not finish the stream: the frames to send next (a keep-alive,
        or the timeout frame), whether the stream ends with them, and whether the slot is due
        for renewal."""
        now = self.now = time.monotonic()
        if batch.frames:
            self.last_sent = now
        if now >= self.deadline:
            return [TIMEOUT_FRAME], True, False
        frames = []
        if now - self.last_sent >= KEEPALIVE_SECONDS:
            self.last_sent = now
            frames.append(KEEPALIVE_FRAME)
        renew = now - self.last_renewed >= SLOT_RENEW_SECONDS
        if renew:
            self.last_renewed = now
        return frames, False, renew

    def wait_seconds(self, poll_seconds: float) -> float:
        """How long an idle stream may wait before it polls, times out, or owes a keep-alive
        or a renewal."""
        return min(
            poll_seconds,
            self.deadline - self.now,
            KEEPALIVE_SECONDS - (self.now - self.last_sent),
            SLOT_RENEW_SECONDS - (self.now - self.last_renewed),
        )


def _blocking_stream(*, job: Job, after_id: int, slot: StreamSlot) -> Iterator[str]:
    """Under WSGI: the stream holds its thread, polling."""
    try:
        clock = _StreamClock()
        yield RETRY_FRAME
        while True:
            batch = job_event_batch(job=job, after_id=after_id)
            after_id = batch.last_id
            yield from batch.frames
            if batch.finished:
                return
            frames, ended, renew = clock.after_batch(batch)
            yield from frames
            if ended:
                return
            if renew:
                _slot_renew(slot)
            if not batch.more:
                time.sleep(min(POLL_SECONDS, clock.deadline - clock.now))
    finally:
        _slot_release(slot)


_Result = TypeVar("_Result")

_db_executor = ThreadPoolExecutor(
    max_workers=STREAM_DB_THREADS, thread_name_prefix="phonos-stream-db"
)


def _with_connection_check(function: Callable[..., _Result]) -> Callable[..., _Result]:
    """What Django does around each request, done around each call on a pool thread: drop a
    connection that broke or outlived CONN_MAX_AGE."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> _Result:
        close_old_connections()
        return function(*args, **kwargs)

    return call


def on_db_thread(function: Callable[..., _Result]) -> Callable[..., Awaitable[_Result]]:
    return sync_to_async(
        _with_connection_check(function), thread_sensitive=False, executor=_db_executor
    )


async def _async_stream(*, job: Job, after_id: int, slot: StreamSlot) -> AsyncIterator[str]:
    """Under ASGI: the stream waits on a wake-up, holding no thread and no connection."""
    hub = _wake_hub()
    job_key = str(job.id)
    wake = hub.register(job_key)
    poll_seconds = FALLBACK_POLL_SECONDS if settings.REDIS_URL else POLL_SECONDS
    read_batch = on_db_thread(job_event_batch)
    try:
        clock = _StreamClock()
        yield RETRY_FRAME
        while True:
            # Cleared before reading: an event committed during the read wakes the next wait.
            wake.clear()
            batch = await read_batch(job=job, after_id=after_id)
            after_id = batch.last_id
            for frame in batch.frames:
                yield frame
            if batch.finished:
                return
            frames, ended, renew = clock.after_batch(batch)
            for frame in frames:
                yield frame
            if ended:
                return
            if renew:
                await on_db_thread(_slot_renew)(slot)
            if batch.more:
                continue
            wait = clock.wait_seconds(poll_seconds)
            try:
                await asyncio.wait_for(wake.wait(), timeout=max(wait, 0.01))
            except TimeoutError:
                pass
    finally:
        hub.unregister(job_key, wake)
        # Runs on client disconnect too (the task is cancelled); shielded so the release
        # itself is not cancelled half-way.
        await asyncio.shield(on_db_thread(_slot_release)(slot))


def job_event_response(
    *, request: HttpRequest, job: Job, account_id: int, last_event_id: str | None
) -> StreamingHttpResponse:
    """The job's event stream, holding one of the account's stream slots until it ends.
    Raises TooManyRequests when the account has no slot left."""
    after_id = job_event_resume_point(job=job, last_event_id=last_event_id)
    slot = stream_slot_acquire(account_id=account_id)
    if isinstance(request, ASGIRequest):
        content: Iterator[str] | AsyncIterator[str] = _async_stream(
            job=job, after_id=after_id, slot=slot
        )
    else:
        content = _blocking_stream(job=job, after_id=after_id, slot=slot)
    response = StreamingHttpResponse(content, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # nginx (scripts/serve) must pass each event on at once rather than buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response
