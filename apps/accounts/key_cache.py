"""API key lookups reused in-process for a few seconds, keyed by the key's digest.

Each entry remembers the credentials version (a Redis counter) that this process had seen
before it read the key. Every revocation and account deletion bumps the version once its
transaction commits; every rate-limited request reads the version in the round trip it makes
anyway (apps.common.ratelimit), and a request whose entry is older than that version reads its
key again before the view runs. So a revoked key stops at the next request in every process.
Entries also expire after PHONOS_API_KEY_CACHE_SECONDS (at most 5), which bounds revocation
where the version cannot be read (no Redis, or Redis down).

Entries hold column values, not model instances: each request gets its own ApiKey and Account,
so nothing one request changes on them leaks into another's.
"""

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Model
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init

from apps.accounts.keys import key_digest, looks_like_key
from apps.accounts.models import Account, ApiKey
from apps.common.ratelimit import CREDENTIALS_VERSION_KEY, redis_client

logger = logging.getLogger(__name__)

_KEY_FIELDS = [field.attname for field in ApiKey._meta.concrete_fields]
_ACCOUNT_FIELDS = [field.attname for field in Account._meta.concrete_fields]
_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class _Entry:
    loaded_at: float
    version: int | None
    key: dict[str, Any]
    account: dict[str, Any]


_lock = threading.Lock()
_entries: dict[str, _Entry] = {}
# The newest credentials version this process has seen from Redis.
_seen_version: int | None = None


def _load(digest: str, version: int | None) -> ApiKey | None:
    row = (
        ApiKey.objects.filter(digest=digest, revoked_at__isnull=True)
        .values(*_KEY_FIELDS, *(f"account__{name}" for name in _ACCOUNT_FIELDS))
        .first()
    )
    if row is None:
        with _lock:
            _entries.pop(digest, None)
        return None
    entry = _Entry(
        loaded_at=time.monotonic(),
        version=version,
        key={name: row[name] for name in _KEY_FIELDS},
        account={name: row[f"account__{name}"] for name in _ACCOUNT_FIELDS},
    )
    if settings.PHONOS_API_KEY_CACHE_SECONDS:
        with _lock:
            if len(_entries) >= _MAX_ENTRIES:
                _entries.clear()
            _entries[digest] = entry
    return _instances(entry)


_M = TypeVar("_M", bound=Model)


def _instance(model: type[_M], values: dict[str, Any]) -> _M:
    """The instance that a query of `values` would have built (`Model.from_db`), without
    `Model.__init__`'s work per field (a tenth of a lean read's Python): the values copied into
    the instance's own dict. A model with init signal receivers is built the usual way."""
    if pre_init.has_listeners(model) or post_init.has_listeners(model):
        return model.from_db("default", list(values), list(values.values()))
    instance = model.__new__(model)
    instance.__dict__.update(values)
    state = instance._state = ModelState()
    state.adding, state.db = False, "default"
    return instance


def _instances(entry: _Entry) -> ApiKey:
    api_key = _instance(ApiKey, entry.key)
    # What assigning `api_key.account` does: the account cached as the key's relation.
    api_key._state.fields_cache["account"] = _instance(Account, entry.account)
    api_key.cached_version = entry.version
    return api_key


def api_key_lookup(*, raw_key: str) -> ApiKey | None:
    """The active key with its account, from this process's cache when fresh enough."""
    if not looks_like_key(raw_key):
        return None
    digest = key_digest(raw_key)
    entry = _entries.get(digest)
    if entry is not None and time.monotonic() - entry.loaded_at < (
        settings.PHONOS_API_KEY_CACHE_SECONDS
    ):
        return _instances(entry)
    return _load(digest, _seen_version)


def api_key_revalidate(*, api_key: ApiKey, version: int | None) -> ApiKey | None:
    """`version` came back from Redis with this request's rate limit: if the key was read
    before it, read it again (None: revoked or deleted meanwhile)."""
    global _seen_version
    if version is None:
        return api_key
    _seen_version = version
    # Unequal rather than older: a Redis that lost its data starts the count again.
    if getattr(api_key, "cached_version", None) == version:
        return api_key
    return _load(api_key.digest, version)


def api_key_touched(*, api_key: ApiKey) -> None:
    """The key's last_used_at was written: keep the cached copy in step, so the next requests
    do not write it again."""
    with _lock:
        entry = _entries.get(api_key.digest)
        if entry is not None:
            entry.key["last_used_at"] = api_key.last_used_at


def credentials_changed() -> None:
    """Keys were revoked or deleted: once this transaction commits, drop this process's cache
    and tell every other process through the version."""

    def bump() -> None:
        with _lock:
            _entries.clear()
        if not settings.REDIS_URL:
            return
        try:
            redis_client().incr(CREDENTIALS_VERSION_KEY)
        except redis.RedisError:
            logger.warning(
                "Could not announce a key revocation; other processes see it within %s s",
                settings.PHONOS_API_KEY_CACHE_SECONDS,
            )

    transaction.on_commit(bump)
