"""Idempotency-Key support for POST /v1/predict and POST /v1/batch.

The key is claimed in the same transaction as the jobs it creates: two racing requests with
one key cannot both charge, because the loser's insert violates the unique constraint and its
whole transaction (jobs and debits) rolls back. Only successful responses are stored, so a
request refused for a fixable reason (402, 429) can be retried with the same key.
"""

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import Account
from apps.common.exceptions import Conflict, InvalidInput
from apps.jobs.models import IdempotencyRecord

MAX_KEY_LENGTH = 255


def request_fingerprint(*, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{path}\n{canonical}".encode()).hexdigest()


def _replay(record: IdempotencyRecord, fingerprint: str) -> tuple[int, Any]:
    if record.request_hash != fingerprint:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new request"
        )
    return record.status_code, record.response_body


def idempotent_call(
    *,
    account: Account,
    key: str | None,
    fingerprint: str,
    produce: Callable[[], tuple[int, Any]],
) -> tuple[int, Any, bool]:
    """Run `produce` once per key; returns (status, body, replayed)."""
    if key is None:
        status, body = produce()
        return status, body, False
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    window_start = timezone.now() - timedelta(hours=settings.PHONOS_IDEMPOTENCY_TTL_HOURS)
    record = IdempotencyRecord.objects.filter(account=account, key=key).first()
    if record is not None and record.created_at >= window_start:
        return (*_replay(record, fingerprint), True)
    try:
        with transaction.atomic():
            if record is not None:
                IdempotencyRecord.objects.filter(id=record.id).delete()
            status, body = produce()
            if status < 300:
                IdempotencyRecord.objects.create(
                    account=account,
                    key=key,
                    request_hash=fingerprint,
                    status_code=status,
                    response_body=body,
                )
    except IntegrityError:
        record = IdempotencyRecord.objects.get(account=account, key=key)
        return (*_replay(record, fingerprint), True)
    return status, body, False
