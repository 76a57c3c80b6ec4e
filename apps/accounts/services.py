from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.key_cache import credentials_changed
from apps.accounts.keys import DISPLAY_PREFIX_LENGTH, generate_key, key_digest
from apps.accounts.models import Account, ApiKey
from apps.common.exceptions import InvalidInput, NotFound

LAST_USED_WRITE_INTERVAL = timedelta(minutes=5)
EMAIL_VERIFICATION_SALT = "phonos.accounts.email-verification"


@dataclass(frozen=True)
class CreatedKey:
    api_key: ApiKey
    raw_key: str  # shown once, never stored


@transaction.atomic
def account_create(*, username: str, email: str, email_verified: bool = False) -> Account:
    """A new tenant with no credits: billing's `account_open` grants the opening credits.
    `email_verified` is for operators, who vouch for the address themselves; their accounts
    get the credits the operator chose, never the trial as well."""
    if Account.objects.filter(username=username).exists():
        raise InvalidInput(f"An account named {username!r} already exists")
    if (
        email_verified
        and Account.objects.filter(email__iexact=email, email_verified_at__isnull=False).exists()
    ):
        raise InvalidInput(f"Another account has already verified {email!r}")
    now = timezone.now()
    return Account.objects.create(
        username=username,
        email=email,
        email_verified_at=now if email_verified else None,
        trial_credits_granted_at=now if email_verified else None,
    )


def email_verification_token(*, account: Account) -> str:
    """Signed and timestamped; it names the address too, so a changed email voids old links."""
    return signing.dumps(
        {"account": account.id, "email": account.email.lower()}, salt=EMAIL_VERIFICATION_SALT
    )


@dataclass(frozen=True)
class EmailVerification:
    account: Account
    # True for the one verification that claims the account's trial credits; billing grants them.
    trial_claimed: bool


def account_email_verify(*, token: str) -> EmailVerification:
    """Mark the address verified and claim the trial credits, exactly once per account.

    Both steps are compare-and-set updates from empty, so a link followed twice, or twice at the
    same moment, verifies and claims once; the caller grants in the same transaction.
    """
    try:
        payload = signing.loads(
            token,
            salt=EMAIL_VERIFICATION_SALT,
            max_age=settings.PHONOS_EMAIL_VERIFICATION_MAX_AGE_SECONDS,
        )
    except signing.SignatureExpired:
        raise InvalidInput("This verification link has expired; ask for a new one") from None
    except signing.BadSignature:
        raise InvalidInput("This verification link is not valid") from None
    now = timezone.now()
    with transaction.atomic():
        account = Account.objects.filter(
            id=payload["account"], email__iexact=payload["email"]
        ).first()
        if account is None:
            raise InvalidInput("This verification link is not valid")
        try:
            with transaction.atomic():
                Account.objects.filter(id=account.id, email_verified_at__isnull=True).update(
                    email_verified_at=now
                )
        except IntegrityError:
            raise InvalidInput("Another account has already verified this email address") from None
        claimed = Account.objects.filter(
            id=account.id, trial_credits_granted_at__isnull=True
        ).update(trial_credits_granted_at=now)
        account.refresh_from_db()
    return EmailVerification(account=account, trial_claimed=bool(claimed))


@transaction.atomic
def api_key_create(
    *, account: Account, name: str = "", rate_limit_per_minute: int | None = None
) -> CreatedKey:
    """A key within the operator's limits: its rate at most the account's maximum, and at most
    PHONOS_MAX_ACTIVE_KEYS_PER_ACCOUNT active keys (the account row is locked while counting)."""
    account = Account.objects.select_for_update().get(id=account.id)
    maximum = account.key_rate_limit_max
    if rate_limit_per_minute is None:
        rate_limit_per_minute = min(settings.PHONOS_DEFAULT_RATE_LIMIT, maximum)
    if rate_limit_per_minute < 1:
        raise InvalidInput("rate_limit_per_minute must be at least 1")
    if rate_limit_per_minute > maximum:
        raise InvalidInput(
            f"rate_limit_per_minute must be at most {maximum}, this account's maximum per key"
        )
    active = ApiKey.objects.filter(account=account, revoked_at__isnull=True).count()
    if active >= settings.PHONOS_MAX_ACTIVE_KEYS_PER_ACCOUNT:
        raise InvalidInput(
            f"This account already has {active} active keys, the most allowed; revoke one first"
        )
    raw_key = generate_key()
    api_key = ApiKey.objects.create(
        account=account,
        name=name,
        digest=key_digest(raw_key),
        prefix=raw_key[:DISPLAY_PREFIX_LENGTH],
        rate_limit_per_minute=rate_limit_per_minute,
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
    if updated:
        credentials_changed()  # API processes drop their cached lookups (key_cache)
    return api_key


def api_key_touch(*, api_key: ApiKey) -> None:
    """Record use at most every few minutes, so a busy key does not write on every request."""
    now = timezone.now()
    if api_key.last_used_at and now - api_key.last_used_at < LAST_USED_WRITE_INTERVAL:
        return
    ApiKey.objects.filter(id=api_key.id).update(last_used_at=now)
    api_key.last_used_at = now
