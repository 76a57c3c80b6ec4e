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


def account_get(*, account_id: int | None = None, email: str | None = None) -> Account | None:
    queryset = Account.objects.all()
    if account_id is not None:
        return queryset.filter(id=account_id).first()
    return queryset.filter(email=email).order_by("id").first()
