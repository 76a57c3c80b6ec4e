"""Usage counters: requests, credits and latency per key, endpoint, model and UTC day.

With Redis a request's increments go to one hash (through apps.common.counters, in the rate
limit's round trip) and `usage_fold` adds that hash to `UsageCounter` rows: it RENAMEs the hash
to a claim, adds the claim in one transaction that also records it (UsageFold), then deletes
it. A fold that dies before committing leaves the claim for the next one; one that dies after
committing leaves a recorded claim, which the next one deletes without adding it again.
Without Redis (the embedded default) the same increments wait in the process's buffer and its
flusher adds them to the rows every PHONOS_USAGE_FLUSH_SECONDS (and before `/v1/usage` answers
in that process): a request no longer waits for SQLite's write lock.
"""

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.accounts.models import Account, ApiKey
from apps.common.counters import PENDING_HASH, counters_add, counters_flush, counters_local_sink
from apps.common.ratelimit import redis_client
from apps.common.request_usage import RequestUsage
from apps.usage.models import UsageCounter, UsageFold
from apps.usage.selectors import usage_summary

logger = logging.getLogger(__name__)

CLAIMS_SET = "phonos:usage:claims"
CLAIM_PREFIX = "phonos:usage:claim:"
# Hash fields are "<account>|<key>|<date>|<endpoint>|<model>|<metric>"; no endpoint route or
# model id contains "|".
SEPARATOR = "|"
REQUESTS, CREDITS, LATENCY_US = "n", "c", "l"


@dataclass
class _Row:
    account_id: int
    api_key_id: int
    date: date
    endpoint: str
    model: str
    requests: int = 0
    credits: int = 0
    latency_ms_sum: float = 0.0


def usage_record(
    *, usage: RequestUsage, endpoint: str, method: str, status_code: int, latency_ms: float
) -> None:
    """Count one authenticated request; `usage` carries what the request itself reported."""
    if usage.account_id is None or usage.api_key_id is None:
        return
    today = timezone.now().date()
    base = SEPARATOR.join(
        [str(usage.account_id), str(usage.api_key_id), today.isoformat(), endpoint, usage.model]
    )
    increments = {
        (PENDING_HASH, f"{base}|{REQUESTS}"): 1,
        (PENDING_HASH, f"{base}|{LATENCY_US}"): round(latency_ms * 1000),
    }
    if usage.credits:
        increments[PENDING_HASH, f"{base}|{CREDITS}"] = usage.credits
    counters_add(increments)


def usage_fold() -> int:
    """Add every pending and left-over claimed hash to the counters; returns the requests added."""
    if not settings.REDIS_URL:
        return 0
    try:
        return _fold(redis_client())
    except redis.RedisError:
        logger.warning("Could not fold usage counters; the next fold will", exc_info=True)
        return 0


def _fold(client: redis.Redis) -> int:
    claim = f"{CLAIM_PREFIX}{uuid.uuid4().hex}"
    # Named before the RENAME, so a fold that dies between the two leaves a name the next
    # one finds (and folds, empty, harmlessly) rather than a claimed hash nobody knows of.
    client.sadd(CLAIMS_SET, claim)
    try:
        client.rename(PENDING_HASH, claim)
    except redis.ResponseError:
        pass  # nothing pending
    added = 0
    for name in sorted(_text(member) for member in client.smembers(CLAIMS_SET)):
        added += _claim_fold(client, name)
    return added


def _claim_fold(client: redis.Redis, claim: str) -> int:
    rows = _rows_parse(client.hgetall(claim))
    try:
        with transaction.atomic():
            # First, so a second fold of the same claim waits here and then fails, whole.
            UsageFold.objects.create(claim=claim)
            # A deleted account's keys are deleted with it: what its last requests counted
            # must not bring its usage back after the deletion.
            _counters_upsert(_of_live_keys(rows))
    except IntegrityError:
        rows = []  # folded already, by a fold that died before deleting it or one running now
    client.delete(claim)
    client.srem(CLAIMS_SET, claim)
    return sum(row.requests for row in rows)


def _of_live_keys(rows: list[_Row]) -> list[_Row]:
    keys = {row.api_key_id for row in rows}
    existing = set(ApiKey.objects.filter(id__in=keys).values_list("id", flat=True))
    return [row for row in rows if row.api_key_id in existing]


def _local_store(fields: Mapping[str, int | float]) -> None:
    """Without Redis: this process's buffered usage, added to the rows in one transaction."""
    with transaction.atomic():
        _counters_upsert(_of_live_keys(_rows_parse(fields)))


counters_local_sink(PENDING_HASH, _local_store)


def _text(value: bytes | str) -> str:
    # redis-py types replies as either; this client (no decode_responses) returns bytes.
    return value.decode() if isinstance(value, bytes) else value


def _rows_parse(fields: Mapping[Any, bytes | str | int | float]) -> list[_Row]:
    rows: dict[tuple[int, int, date, str, str], _Row] = {}
    for raw_field, raw_value in fields.items():
        account, key, day, endpoint, model, metric = _text(raw_field).split(SEPARATOR)
        identity = (int(account), int(key), date.fromisoformat(day), endpoint, model)
        row = rows.setdefault(identity, _Row(*identity))
        value = int(raw_value)
        if metric == REQUESTS:
            row.requests += value
        elif metric == CREDITS:
            row.credits += value
        elif metric == LATENCY_US:
            row.latency_ms_sum += value / 1000
    return [rows[identity] for identity in sorted(rows)]  # one lock order for every fold


def _counters_upsert(rows: list[_Row]) -> None:
    if not rows:
        return
    table = UsageCounter._meta.db_table
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    parameters = [
        value
        for row in rows
        for value in (
            row.account_id,
            row.api_key_id,
            row.date,
            row.endpoint,
            row.model,
            row.requests,
            row.credits,
            row.latency_ms_sum,
        )
    ]
    # Adds rather than sets, which the ORM's bulk_create(update_conflicts=...) cannot say.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (account_id, api_key_id, date, endpoint, model, requests, "
            f"credits, latency_ms_sum) VALUES {values} "
            "ON CONFLICT (account_id, date, api_key_id, endpoint, model) DO UPDATE SET "
            f"requests = {table}.requests + excluded.requests, "
            f"credits = {table}.credits + excluded.credits, "
            f"latency_ms_sum = {table}.latency_ms_sum + excluded.latency_ms_sum",
            parameters,
        )


def usage_report(*, account: Account, days: int) -> dict[str, Any]:
    """The account's usage as counted until now, not only what the last beat fold saw: this
    process's own buffer and every process's sent counters are folded first (other processes'
    buffers lag by at most PHONOS_USAGE_FLUSH_SECONDS)."""
    counters_flush()
    usage_fold()
    return usage_summary(account=account, days=days)
