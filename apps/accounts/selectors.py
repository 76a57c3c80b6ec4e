from apps.accounts.keys import key_digest, looks_like_key
from apps.accounts.models import Account, ApiKey


def api_key_get_active(*, raw_key: str) -> ApiKey | None:
    if not looks_like_key(raw_key):
        return None
    return (
        ApiKey.objects.select_related("account")
        .filter(digest=key_digest(raw_key), revoked_at__isnull=True)
        .first()
    )


def account_get(*, account_id: int) -> Account | None:
    return Account.objects.filter(id=account_id).first()


def account_get_by_verified_email(*, email: str) -> Account | None:
    """The one account that verified this address (a constraint keeps it one), if any."""
    return Account.objects.filter(email__iexact=email, email_verified_at__isnull=False).first()
