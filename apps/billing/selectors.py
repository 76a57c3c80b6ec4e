from dataclasses import dataclass

from django.db.models import Sum

from apps.accounts.models import Account
from apps.billing.models import LedgerEntry


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


def ledger_entry_list(*, account: Account, limit: int = 100):
    return LedgerEntry.objects.filter(account=account).order_by("-id")[:limit]
