"""The credit ledger: every change of balance is an entry written with the balance change.

The cached balance on Account moves only through `_apply`, in the caller's transaction, by a
conditional UPDATE (`... WHERE credit_balance >= cost` for spending), so concurrent spenders
can never drive it below zero; a CHECK constraint backs that up.
"""

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.models import Account
from apps.accounts.services import account_create, account_email_verify
from apps.billing.models import CheckoutSession, LedgerEntry, StripeEvent
from apps.billing.selectors import credit_pack_get
from apps.billing.stripe_client import (
    PaymentsNotConfigured,
    stripe_checkout_session_open,
    stripe_event_verify,
    stripe_payments_enabled,
)
from apps.common.exceptions import ApplicationError, InsufficientCredits, InvalidInput
from apps.common.metrics import credits_debited_observe

logger = logging.getLogger(__name__)


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


def _apply_once(**entry: Any) -> LedgerEntry | None:
    """`_apply`, unless the ledger already holds this entry (its unique purchase reference or
    job refund): then nothing changes and it returns None."""
    try:
        with transaction.atomic():
            return _apply(**entry)
    except IntegrityError:
        return None


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


def credits_forfeit(*, account_id: int, amount: int, description: str) -> LedgerEntry:
    """Take `amount` credits away for good (an adjustment entry), e.g. a deleted account's
    remaining balance; the conditional update refuses more than the balance holds."""
    if amount <= 0:
        raise InvalidInput("A forfeit must be a positive number of credits")
    return _apply(
        account_id=account_id,
        amount=-amount,
        kind=LedgerEntry.Kind.ADJUSTMENT,
        description=description,
    )


@transaction.atomic
def account_open(
    *, username: str, email: str, credits: int = 0, email_verified: bool = False
) -> Account:
    """A new tenant and its opening credits, in one transaction (accounts knows no billing)."""
    account = account_create(username=username, email=email, email_verified=email_verified)
    if credits:
        # Opening credits stand in for the trial: verifying the address later adds nothing.
        Account.objects.filter(id=account.id).update(trial_credits_granted_at=timezone.now())
        credits_grant(account_id=account.id, amount=credits, description="Initial credits")
        account.refresh_from_db()
    return account


@transaction.atomic
def account_email_verify_and_credit(*, token: str) -> tuple[Account, int]:
    """Verify an address from its mailed link and grant the trial credits the first time:
    the account and the credits granted (0 when the link had been used)."""
    verification = account_email_verify(token=token)
    credits = settings.PHONOS_SIGNUP_CREDITS if verification.trial_claimed else 0
    if credits:
        credits_grant(
            account_id=verification.account.id, amount=credits, description="Trial credits"
        )
        verification.account.refresh_from_db()
    return verification.account, credits


def credits_purchase(
    *, account_id: int, amount: int, reference: str, description: str = ""
) -> LedgerEntry | None:
    """Credit a paid purchase once per payment reference; a replay returns None."""
    return _apply_once(
        account_id=account_id,
        amount=amount,
        kind=LedgerEntry.Kind.PURCHASE,
        reference=reference,
        description=description,
    )


# The debit of a job as two common table expressions: the conditional UPDATE, then the ledger
# entry from the balance it left. `{guard}` may add conditions of the caller's to the UPDATE.
_JOB_DEBIT_WITH = """
debited AS (
    UPDATE {account} SET credit_balance = credit_balance - %s
    WHERE id = %s AND credit_balance >= %s{guard} RETURNING credit_balance
),
{entry} AS (
    INSERT INTO {ledger} (account_id, kind, amount, balance_after, job_id, reference,
        description, created_at)
    SELECT %s, %s, %s, credit_balance, %s, '', %s, %s FROM debited RETURNING id, balance_after
)"""
JOB_DEBIT_DESCRIPTION = "Job submitted"


def job_debit_with(
    *,
    account_id: int,
    job_id: uuid.UUID,
    cost: int,
    entry: str,
    guard: str = "",
    guard_parameters: tuple[Any, ...] = (),
) -> tuple[str, list[Any]]:
    """PostgreSQL: `_apply`'s debit of a job as the common table expressions of one statement
    (SQL and parameters), for a caller that writes more in the same statement. The CTE named
    `entry` yields the ledger entry's `id` and `balance_after`, or no row where nothing was
    written: a short balance, no such account, or a `guard` (SQL added to the UPDATE's WHERE,
    with its `guard_parameters`) that did not hold. The caller must then find out why (e.g.
    `credits_debit_for_job`, which raises the errors `_apply` raises) and record the debit's
    metric (`credits_debited_observe`) where it wrote."""
    quote = connection.ops.quote_name
    statement = _JOB_DEBIT_WITH.format(
        account=quote(Account._meta.db_table),
        ledger=quote(LedgerEntry._meta.db_table),
        entry=quote(entry),
        guard=guard,
    )
    kind = str(LedgerEntry.Kind.JOB_DEBIT)
    parameters = [
        cost,
        account_id,
        cost,
        *guard_parameters,
        account_id,
        kind,
        -cost,
        job_id,
        JOB_DEBIT_DESCRIPTION,
        timezone.now(),
    ]
    return statement, parameters


def _job_debit_sql(*, account_id: int, job_id: uuid.UUID, cost: int) -> LedgerEntry | None:
    """`_apply`'s debit as one hand-written statement on PostgreSQL, so a submission does not
    compile three ORM statements. None: the balance is short (or no such account); nothing
    was written."""
    with_sql, parameters = job_debit_with(
        account_id=account_id, job_id=job_id, cost=cost, entry="entry"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {with_sql} SELECT id, balance_after FROM entry", parameters)
        row = cursor.fetchone()
    if row is None:
        return None
    entry = LedgerEntry(
        id=row[0],
        account_id=account_id,
        kind=LedgerEntry.Kind.JOB_DEBIT,
        amount=-cost,
        balance_after=row[1],
        job_id=job_id,
        reference="",
        description=JOB_DEBIT_DESCRIPTION,
        created_at=parameters[-1],
    )
    entry._state.adding = False
    entry._state.db = "default"
    return entry


def credits_debit_for_job(
    *, account_id: int, job_id: uuid.UUID, cost: int, model: str
) -> LedgerEntry:
    """Charge a job. Must run inside the transaction that creates the job."""
    entry = None
    if connection.vendor == "postgresql" and cost > 0:
        entry = _job_debit_sql(account_id=account_id, job_id=job_id, cost=cost)
    if entry is None:
        # SQLite, or a short balance: `_apply` writes it (or raises the same errors as ever).
        entry = _apply(
            account_id=account_id,
            amount=-cost,
            kind=LedgerEntry.Kind.JOB_DEBIT,
            job_id=job_id,
            description=JOB_DEBIT_DESCRIPTION,
        )
    credits_debited_observe(model=model, amount=cost)
    return entry


def credits_refund_for_job(
    *, account_id: int, job_id: uuid.UUID, reason: str, amount: int | None = None
) -> LedgerEntry | None:
    """Refund a job's charge exactly once; a second call finds the refund and does nothing.
    `amount` refunds part of it (a job served from another's run keeps the reuse price)."""
    debit = LedgerEntry.objects.filter(
        account_id=account_id, job_id=job_id, kind=LedgerEntry.Kind.JOB_DEBIT
    ).first()
    if debit is None:
        return None
    refund = -debit.amount if amount is None else min(amount, -debit.amount)
    if refund <= 0:
        return None
    return _apply_once(
        account_id=account_id,
        amount=refund,
        kind=LedgerEntry.Kind.REFUND,
        job_id=job_id,
        description=reason[:255],
    )


def checkout_session_create(
    *, account: Account, pack_id: str, success_url: str, cancel_url: str
) -> tuple[str, str]:
    """Open a Stripe Checkout Session for a credit pack; returns (session id, checkout URL).

    Our row is committed before Stripe is called, so a completion can always be matched to
    the credits we sold, even if this process dies right after Stripe answers.
    """
    if not stripe_payments_enabled():
        raise PaymentsNotConfigured("Buying credits is not enabled on this Phonos deployment")
    pack = credit_pack_get(pack_id=pack_id)
    checkout = CheckoutSession.objects.create(
        account=account,
        pack_id=pack.id,
        credits=pack.credits,
        amount_cents=pack.price_cents,
        currency=settings.PHONOS_CURRENCY,
    )
    try:
        session = stripe_checkout_session_open(
            params={
                "mode": "payment",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": checkout.currency,
                            "unit_amount": checkout.amount_cents,
                            "product_data": {
                                "name": f"Phonos credits: {pack.credits:,} ({pack.id} pack)"
                            },
                        },
                    }
                ],
                "client_reference_id": str(account.id),
                "metadata": {
                    "phonos_checkout_id": str(checkout.id),
                    "phonos_account_id": str(account.id),
                    "phonos_pack": pack.id,
                    "phonos_credits": str(pack.credits),
                },
                "success_url": success_url,
                "cancel_url": cancel_url,
            },
            idempotency_key=f"phonos-checkout-{checkout.id}",
        )
    except ApplicationError:
        CheckoutSession.objects.filter(
            id=checkout.id, status=CheckoutSession.Status.CREATING
        ).update(status=CheckoutSession.Status.FAILED)
        raise
    CheckoutSession.objects.filter(id=checkout.id, status=CheckoutSession.Status.CREATING).update(
        stripe_session_id=session.id, url=session.url or "", status=CheckoutSession.Status.OPEN
    )
    return session.id, session.url or ""


STRIPE_CHECKOUT_EVENTS = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
}
# A checkout in one of these states may still be paid, expire or fail.
UNSETTLED = [
    CheckoutSession.Status.CREATING,
    CheckoutSession.Status.OPEN,
    CheckoutSession.Status.AWAITING_PAYMENT,
]


def stripe_webhook_handle(*, payload: bytes, signature: str) -> str:
    """Verify a webhook delivery and handle its event; returns what was done."""
    event = stripe_event_verify(payload=payload, signature=signature)
    return stripe_event_process(
        event_id=event.id, event_type=event.type, session=event.data.object.to_dict()
    )


@transaction.atomic
def stripe_event_process(*, event_id: str, event_type: str, session: Mapping[str, Any]) -> str:
    """Handle one Stripe event exactly once.

    The StripeEvent row is inserted first: a concurrent redelivery waits on its primary key and
    then finds it, and an error below rolls it back so that Stripe's retry handles it again.
    """
    try:
        with transaction.atomic():
            record = StripeEvent.objects.create(id=event_id, type=event_type)
    except IntegrityError:
        return "duplicate"
    record.outcome = (
        _checkout_event_apply(event_type=event_type, session=session)
        if event_type in STRIPE_CHECKOUT_EVENTS
        else "ignored"
    )
    record.save(update_fields=["outcome"])
    return record.outcome


def _checkout_event_apply(*, event_type: str, session: Mapping[str, Any]) -> str:
    stripe_session_id = str(session.get("id") or "")
    checkout = _checkout_for_update(stripe_session_id=stripe_session_id, session=session)
    if checkout is None:
        logger.warning(
            "Stripe event %s for unknown checkout session %r: nothing granted",
            event_type,
            stripe_session_id,
        )
        return "unknown_session"
    unsettled = CheckoutSession.objects.filter(id=checkout.id, status__in=UNSETTLED)
    if event_type == "checkout.session.expired":
        unsettled.update(status=CheckoutSession.Status.EXPIRED)
        return "expired"
    if event_type == "checkout.session.async_payment_failed":
        unsettled.update(status=CheckoutSession.Status.FAILED)
        return "payment_failed"
    if event_type == "checkout.session.completed" and session.get("payment_status") != "paid":
        # A delayed payment method (bank debit): the money comes with async_payment_succeeded.
        unsettled.update(status=CheckoutSession.Status.AWAITING_PAYMENT)
        return "awaiting_payment"
    entry = credits_purchase(
        account_id=checkout.account_id,
        amount=checkout.credits,
        reference=stripe_session_id,
        description=f"Stripe checkout: {checkout.pack_id} pack",
    )
    unsettled.update(status=CheckoutSession.Status.COMPLETED, completed_at=timezone.now())
    return "granted" if entry is not None else "already_granted"


def _checkout_for_update(
    *, stripe_session_id: str, session: Mapping[str, Any]
) -> CheckoutSession | None:
    """Our row for this Stripe session, locked; also one whose creation never heard Stripe's
    answer (found by the checkout id we put in the session's metadata) is linked here."""
    if not stripe_session_id:
        return None
    checkout = (
        CheckoutSession.objects.select_for_update()
        .filter(stripe_session_id=stripe_session_id)
        .first()
    )
    if checkout is not None:
        return checkout
    checkout_id = (session.get("metadata") or {}).get("phonos_checkout_id")
    try:
        checkout_uuid = uuid.UUID(str(checkout_id))
    except ValueError:
        return None
    unlinked = CheckoutSession.objects.filter(
        id=checkout_uuid, stripe_session_id__isnull=True, status__in=UNSETTLED
    )
    if unlinked.update(stripe_session_id=stripe_session_id) != 1:
        return None
    return CheckoutSession.objects.select_for_update().get(id=checkout_uuid)
