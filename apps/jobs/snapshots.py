"""`GET /v1/jobs/{id}`'s answer held in Redis, so that a polled job is answered without
PostgreSQL: the body is read in the rate limit's round trip (`rate_limit_hit(peek=)`), which
every request makes anyway.

Each job's snapshot is a Redis hash, `phonos:job:<id>`:
- `gen`: how many times the job was written since the hash was made (absent: 0);
- `at`: the `gen` its body was read at; `account`: the account that owns it; `body`: the
  answer's JSON bytes, exactly as the API renders them.

A body is good while `at` equals `gen`. Every write to a job's shown columns (JOB_BODY_FIELDS,
`deleted_at`, `account`) bumps `gen` once it commits (`snapshots_forget`, called by the job
queryset's and the model's own write methods, apps.jobs.models), so the next GET reads the row
again. A GET that missed stores what it read only if `gen` is still the one it saw before its
query: a write that committed in between bumped it, and the older body is not stored. So an
answer is never older than a write that committed before the request began, except where the
writer died (or lost Redis) between its commit and the bump: then the snapshot lives until its
expiry, PHONOS_JOB_SNAPSHOT_SECONDS (docs/api.md). Without Redis there are no snapshots.
"""

import logging
import uuid
from collections.abc import Iterable
from functools import cache

import redis
from django.conf import settings
from django.db import transaction
from redis.commands.core import Script

from apps.common.ratelimit import redis_client, script_run

logger = logging.getLogger(__name__)

_PREFIX = "phonos:job:"

# Stored only if no write bumped `gen` since the reader read it (ARGV[1]).
_STORE = """
local gen = redis.call('HGET', KEYS[1], 'gen') or '0'
if gen ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'gen', gen, 'at', gen, 'account', ARGV[2], 'body', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


# A write counter outlives its last write by at least this long, so that a GET that read it
# before the write can never find it gone (back at 0) and store what it read.
_COUNTER_SECONDS = 60


def snapshots_enabled() -> bool:
    """Whether GETs read and store snapshots (PHONOS_JOB_SNAPSHOT_SECONDS > 0, with Redis)."""
    return bool(settings.REDIS_URL) and settings.PHONOS_JOB_SNAPSHOT_SECONDS > 0


def snapshots_marked() -> bool:
    """Whether writes mark snapshots stale: wherever there is Redis, whatever this process's
    PHONOS_JOB_SNAPSHOT_SECONDS, so that a worker set to 0 never leaves an API node's
    snapshot stale."""
    return bool(settings.REDIS_URL)


def snapshot_key(job_id: uuid.UUID) -> str:
    return f"{_PREFIX}{job_id}"


class Snapshot:
    """A job's hash as `rate_limit_hit(peek=)` read it: the body if it is current, and the
    `gen` that a body read now from the database is to be stored at."""

    __slots__ = ("account_id", "body", "gen")

    def __init__(self, fields: list[bytes]) -> None:
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        self.gen = values.get(b"gen", b"0")
        current = b"body" in values and values.get(b"at") == self.gen
        self.body = values[b"body"] if current else None
        self.account_id = int(values[b"account"]) if current else None


@cache
def _store_script() -> Script:
    return redis_client().register_script(_STORE)


def snapshot_store(*, job_id: uuid.UUID, gen: bytes, account_id: int, body: bytes) -> bool:
    """Keep `body`, read from the database after `gen` was seen, unless a write came since.
    Never raises: a snapshot not stored is read from the database next time."""
    milliseconds = settings.PHONOS_JOB_SNAPSHOT_SECONDS * 1000
    try:
        stored = script_run(
            _store_script(), [snapshot_key(job_id)], [gen, b"%d" % account_id, body, milliseconds]
        )
    except redis.RedisError:
        logger.warning("Could not store the snapshot of job %s", job_id)
        return False
    return bool(stored)


def snapshots_forget(job_ids: Iterable[uuid.UUID | str], *, using: str = "default") -> None:
    """The jobs' snapshots are stale once the caller's transaction commits (at once outside
    one): bump each one's `gen` then. A bump that fails is logged; that snapshot is served
    until it expires (PHONOS_JOB_SNAPSHOT_SECONDS)."""
    if not snapshots_marked():
        return
    keys = sorted({snapshot_key(uuid.UUID(str(job_id))) for job_id in job_ids})
    if keys:
        transaction.on_commit(lambda: _bump(keys), using=using)


def _bump(keys: list[str]) -> None:
    milliseconds = max(settings.PHONOS_JOB_SNAPSHOT_SECONDS, _COUNTER_SECONDS) * 1000
    try:
        pipeline = redis_client().pipeline(transaction=False)
        for key in keys:
            pipeline.hincrby(key, "gen", 1)
            pipeline.hdel(key, "body")
            pipeline.pexpire(key, milliseconds)
        pipeline.execute()
    except redis.RedisError:
        logger.warning(
            "Could not mark %d job snapshot(s) stale; they expire within %s s",
            len(keys),
            settings.PHONOS_JOB_SNAPSHOT_SECONDS,
        )
