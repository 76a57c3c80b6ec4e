from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet, Sum

from apps.accounts.models import Account
from apps.billing.models import CheckoutSession, LedgerEntry
from apps.billing.packs import CreditPack
from apps.common.exceptions import InvalidInput, NotFound


@dataclass(frozen=True)
class LedgerMismatch:
    account_id: int
    balance: int
    ledger_sum: int


def ledger_mismatches() -> list[LedgerMismatch]:
    sums = dict(
        LedgerEntry.objects.values("account_id")
        .annotate(total=Sum("amount"))
        .values_list("account_id", "total")
    )
    mismatches = []
    for account_id, balance in Account.objects.values_list("id", "credit_balance"):
        total = sums.get(account_id) or 0
        if total != balance:
            mismatches.append(LedgerMismatch(account_id, balance, total))
    return mismatches


def ledger_entry_list(*, account: Account, limit: int = 100) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(account=account).order_by("-id")[:limit]


def ledger_entry_query(*, account: Account, kind: str | None = None) -> QuerySet[LedgerEntry]:
    """The account's ledger, newest first."""
    entries = LedgerEntry.objects.filter(account=account)
    if kind:
        entries = entries.filter(kind=kind)
    return entries.order_by("-id")


def credit_pack_list() -> tuple[CreditPack, ...]:
    return settings.PHONOS_CREDIT_PACKS


def credit_pack_get(*, pack_id: str) -> CreditPack:
    for pack in settings.PHONOS_CREDIT_PACKS:
        if pack.id == pack_id:
            return pack
    known = ", ".join(pack.id for pack in settings.PHONOS_CREDIT_PACKS)
    raise InvalidInput(f"pack: unknown credit pack {pack_id!r}; choose one of {known}")


def checkout_session_get(*, account: Account, stripe_session_id: str) -> CheckoutSession:
    checkout = CheckoutSession.objects.filter(
        account=account, stripe_session_id=stripe_session_id
    ).first()
    if checkout is None:
        raise NotFound(f"No checkout session {stripe_session_id} for this account")
    return checkout
