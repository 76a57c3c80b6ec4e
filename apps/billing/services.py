"""The credit ledger: every change of balance is an entry written with the balance change.

The cached balance on Account moves only through `_apply`, in the caller's transaction, by a
conditional UPDATE (`... WHERE credit_balance >= cost` for spending), so concurrent spenders
can never drive it below zero; a CHECK constraint backs that up.
"""

import uuid

from django.db import IntegrityError, transaction
from django.db.models import F

from apps.accounts.models import Account
from apps.billing.models import LedgerEntry
from apps.common.exceptions import InsufficientCredits, InvalidInput


def _apply(
    *,
    account_id: int,
    amount: int,
    kind: str,
    job_id: uuid.UUID | None = None,
    reference: str = "",
    description: str = "",
) -> LedgerEntry:
    accounts = Account.objects.filter(id=account_id)
    if amount < 0:
        accounts = accounts.filter(credit_balance__gte=-amount)
    if accounts.update(credit_balance=F("credit_balance") + amount) != 1:
        if Account.objects.filter(id=account_id).exists():
            balance = Account.objects.values_list("credit_balance", flat=True).get(id=account_id)
            raise InsufficientCredits(
                f"This job costs {-amount} credits but the balance is {balance} credits"
            )
        raise InvalidInput(f"Account {account_id} does not exist")
    balance_after = Account.objects.values_list("credit_balance", flat=True).get(id=account_id)
    return LedgerEntry.objects.create(
        account_id=account_id,
        kind=kind,
        amount=amount,
        balance_after=balance_after,
        job_id=job_id,
        reference=reference,
        description=description,
    )


@transaction.atomic
def credits_grant(
    *, account_id: int, amount: int, description: str = "", reference: str = ""
) -> LedgerEntry:
    if amount <= 0:
        raise InvalidInput("A grant must be a positive number of credits")
    return _apply(
        account_id=account_id,
        amount=amount,
        kind=LedgerEntry.Kind.GRANT,
        description=description,
        reference=reference,
    )


@transaction.atomic
def credits_adjust(*, account_id: int, amount: int, description: str) -> LedgerEntry:
    if amount == 0:
        raise InvalidInput("An adjustment must change the balance")
    return _apply(
        account_id=account_id,
        amount=amount,
        kind=LedgerEntry.Kind.ADJUSTMENT,
        description=description,
    )


def credits_purchase(
    *, account_id: int, amount: int, reference: str, description: str = ""
) -> LedgerEntry | None:
    """Credit a paid purchase once per payment reference; a replay returns None."""
    try:
        with transaction.atomic():
            return _apply(
                account_id=account_id,
                amount=amount,
                kind=LedgerEntry.Kind.PURCHASE,
                reference=reference,
                description=description,
            )
    except IntegrityError:
        return None


def credits_debit_for_job(*, account_id: int, job_id: uuid.UUID, cost: int) -> LedgerEntry:
    """Charge a job. Must run inside the transaction that creates the job."""
    return _apply(
        account_id=account_id,
        amount=-cost,
        kind=LedgerEntry.Kind.JOB_DEBIT,
        job_id=job_id,
        description="Job submitted",
    )


def credits_refund_for_job(
    *, account_id: int, job_id: uuid.UUID, reason: str
) -> LedgerEntry | None:
    """Refund a job's charge exactly once; a second call finds the refund and does nothing."""
    debit = LedgerEntry.objects.filter(
        account_id=account_id, job_id=job_id, kind=LedgerEntry.Kind.JOB_DEBIT
    ).first()
    if debit is None:
        return None
    try:
        with transaction.atomic():
            return _apply(
                account_id=account_id,
                amount=-debit.amount,
                kind=LedgerEntry.Kind.REFUND,
                job_id=job_id,
                description=reason[:255],
            )
    except IntegrityError:
        return None
