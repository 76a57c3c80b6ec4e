"""Per-key rate limits: a fixed one-minute window counted atomically in Redis.

One Lua script increments the counter and reads its expiry in a single step, so N parallel
requests over the limit let exactly the limit through. Without Redis (the embedded default) a
process-local counter does the same for the single process that serves it. If Redis is
unreachable the limiter fails open: a broken cache must not stop paying customers.
"""

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from django.conf import settings
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from apps.common.counters import Increments, counters_drain, counters_restore

logger = logging.getLogger(__name__)

WINDOW_MS = 60_000

# Also returns the credentials version (apps.accounts.key_cache), so a process learns of a
# revocation in the round trip it makes anyway, and applies the counters this process buffered
# (apps.common.counters: usage, request metrics) in the same call: KEYS[3...] are their hashes,
# ARGV[2] the increments packed in one string, each `<hash index>,<amount>,<field length>:`
# then the field's bytes (one argument rather than three per increment: redis-py's packing of
# the arguments was the larger part of the call), an amount with a point or exponent a float.
# ARGV[3] = '1': KEYS[3] is a hash the caller peeks at (apps.jobs.snapshots), returned whole as
# a fourth element, and the counters' hashes follow it.
_INCREMENT = """
local current = redis.call('INCR', KEYS[1])
if current == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
local packed = ARGV[2] or ''
local peeked = false
if ARGV[3] == '1' then peeked = redis.call('HGETALL', KEYS[3]) end
local position = 1
while position <= #packed do
  local index, amount, length, start = string.match(packed, '^(%d+),([^,]+),(%d+):()', position)
  local field = string.sub(packed, start, start + tonumber(length) - 1)
  position = start + tonumber(length)
  local key = KEYS[tonumber(index)]
  if string.find(amount, '[.eEn]') then
    redis.call('HINCRBYFLOAT', key, field, amount)
  else
    redis.call('HINCRBY', key, field, amount)
  end
end
if peeked then return {current, ttl, redis.call('GET', KEYS[2]), peeked} end
return {current, ttl, redis.call('GET', KEYS[2])}
"""
CREDENTIALS_VERSION_KEY = "phonos:credentials:version"


@dataclass(frozen=True)
class RateLimitDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    # The credentials version Redis holds (None without Redis, or if it never changed).
    credentials_version: int | None = None
    # The hash `rate_limit_hit(peek=...)` named, as HGETALL returns it (empty if absent);
    # None where nothing was peeked at, without Redis, or with Redis unreachable.
    peeked: list[bytes] | None = None

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


@cache
def _increment_script() -> Script:
    # EVALSHA: the script's text is sent once per connection pool, not with every request.
    return redis_client().register_script(_INCREMENT)


def script_run(script: Script, keys: list[str], arguments: Sequence[bytes | int]) -> Any:
    """`script(keys=keys, args=arguments)` on one pooled connection, without redis-py's command
    machinery (its retry wrapper and response callbacks were a third of the call, measured in
    docs/benchmarks.md): EVALSHA, and the script loaded again if Redis lost it (a restart).
    A connection that failed is dropped and the call tried once more on a fresh one, as
    redis-py's own retry would; a second failure raises (the caller fails open)."""
    pool = redis_client().connection_pool
    for attempt in (1, 2):
        connection = pool.get_connection()
        try:
            try:
                connection.send_command("EVALSHA", script.sha, len(keys), *keys, *arguments)
                return connection.read_response()
            except NoScriptError:
                connection.send_command("SCRIPT", "LOAD", script.script)
                connection.read_response()
                connection.send_command("EVALSHA", script.sha, len(keys), *keys, *arguments)
                return connection.read_response()
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()
            if attempt == 2:
                raise
        finally:
            pool.release(connection)
    raise AssertionError("unreachable")


def _script_arguments(
    bucket: str, increments: Increments, peek: str | None = None
) -> tuple[list[str], list[bytes]]:
    keys = [bucket, CREDENTIALS_VERSION_KEY, *([peek] if peek else [])]
    index: dict[str, int] = {}
    packed = bytearray()
    for (hash_name, field), amount in increments.items():
        if hash_name not in index:
            keys.append(hash_name)
            index[hash_name] = len(keys)  # Lua counts from 1
        name = field.encode()
        packed += b"%d,%s,%d:%s" % (index[hash_name], repr(amount).encode(), len(name), name)
    return keys, [str(WINDOW_MS).encode(), bytes(packed), b"1" if peek else b"0"]


class _LocalWindows:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, float]] = {}

    def hit(self, key: str) -> tuple[int, int]:
        now = time.monotonic()
        with self._lock:
            count, expires = self._windows.get(key, (0, 0.0))
            if expires <= now:
                count, expires = 0, now + WINDOW_MS / 1000
            count += 1
            self._windows[key] = (count, expires)
            return count, int((expires - now) * 1000)


_local_windows = _LocalWindows()


def rate_limit_hit(*, key_id: int, limit: int, peek: str | None = None) -> RateLimitDecision:
    """Count one request against the key's window. With Redis, the usage counters that this
    process has buffered (apps.common.counters) go in the same round trip, and so does reading
    the hash `peek` (the decision's `peeked`), for a caller that may answer from it."""
    bucket = f"phonos:ratelimit:{key_id}"
    version = peeked = None
    if settings.REDIS_URL:
        increments = counters_drain()
        keys, arguments = _script_arguments(bucket, increments, peek)
        try:
            count, ttl_ms, version, *rest = script_run(_increment_script(), keys, arguments)
            peeked = rest[0] if rest else None
        except redis.RedisError:
            counters_restore(increments)
            logger.warning("Rate limiter unavailable; letting the request through")
            return RateLimitDecision(True, limit, limit, WINDOW_MS // 1000)
    else:
        count, ttl_ms = _local_windows.hit(bucket)
    ttl_ms = ttl_ms if ttl_ms and ttl_ms > 0 else WINDOW_MS
    return RateLimitDecision(
        allowed=count <= limit,
        limit=limit,
        remaining=max(0, limit - count),
        reset_seconds=max(1, math.ceil(ttl_ms / 1000)),
        credentials_version=int(version) if version is not None else None,
        peeked=peeked,
    )
