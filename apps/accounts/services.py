from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.accounts.keys import DISPLAY_PREFIX_LENGTH, generate_key, key_digest
from apps.accounts.models import Account, ApiKey
from apps.common.exceptions import InvalidInput, NotFound

LAST_USED_WRITE_INTERVAL = timedelta(minutes=5)


@dataclass(frozen=True)
class CreatedKey:
    api_key: ApiKey
    raw_key: str  # shown once, never stored


def account_create(*, username: str, email: str) -> Account:
    """A new tenant with no credits: billing's `account_open` grants the opening credits."""
    if Account.objects.filter(username=username).exists():
        raise InvalidInput(f"An account named {username!r} already exists")
    return Account.objects.create(username=username, email=email)


def api_key_create(
    *, account: Account, name: str = "", rate_limit_per_minute: int | None = None
) -> CreatedKey:
    if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
        raise InvalidInput("rate_limit_per_minute must be at least 1")
    raw_key = generate_key()
    api_key = ApiKey.objects.create(
        account=account,
        name=name,
        digest=key_digest(raw_key),
        prefix=raw_key[:DISPLAY_PREFIX_LENGTH],
        rate_limit_per_minute=rate_limit_per_minute or settings.PHONOS_DEFAULT_RATE_LIMIT,
    )
    return CreatedKey(api_key=api_key, raw_key=raw_key)


def api_key_revoke(*, account: Account, key_id: int) -> ApiKey:
    updated = ApiKey.objects.filter(id=key_id, account=account, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    api_key = ApiKey.objects.filter(id=key_id, account=account).first()
    if api_key is None:
        raise NotFound(f"API key {key_id} not found")
    if not updated and api_key.revoked_at is None:
        raise InvalidInput(f"API key {key_id} could not be revoked")
    return api_key


def api_key_touch(*, api_key: ApiKey) -> None:
    """Record use at most every few minutes, so a busy key does not write on every request."""
    now = timezone.now()
    if api_key.last_used_at and now - api_key.last_used_at < LAST_USED_WRITE_INTERVAL:
        return
    ApiKey.objects.filter(id=api_key.id).update(last_used_at=now)
    api_key.last_used_at = now
