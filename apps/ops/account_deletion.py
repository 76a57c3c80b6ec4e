"""Deleting an account: what goes, what stays, and in which order (docs/ledger.md).

Gone: the users (so nobody can sign in), API keys, jobs with their events and stored outputs
(every object under `accounts/<id>/` in the object store), webhooks with their deliveries,
usage records and idempotency records.

Stays: the `Account` row itself, as a tombstone without personal data (username and email
replaced), because the ledger is insert-only and its rows point at it. The remaining balance
is forfeited by one `adjustment` entry, so the tombstone holds nothing and `reconcile_ledger`
still balances. Stripe checkout records stay with the ledger they explain.

Active jobs are cancelled (and refunded) first, through the ordinary cancel, so a worker still
running one stops, and drops any outputs it writes late: its compare-and-set finds the job gone.
"""

import logging
from dataclasses import dataclass

from django.db import transaction

from apps.accounts.key_cache import credentials_changed
from apps.accounts.models import Account, ApiKey, User
from apps.billing.services import credits_forfeit
from apps.common.exceptions import ApplicationError
from apps.jobs.models import IdempotencyRecord, Job
from apps.jobs.services import job_cancel
from apps.jobs.storage import get_storage
from apps.usage.models import UsageCounter
from apps.webhooks.models import Webhook

logger = logging.getLogger(__name__)

TOMBSTONE_PREFIX = "deleted-"
# `.invalid` is reserved (RFC 2606): the address is unique per account and reaches nobody.
TOMBSTONE_EMAIL_DOMAIN = "deleted.invalid"


@dataclass(frozen=True)
class AccountDeletion:
    account_id: int
    jobs_cancelled: int
    jobs_deleted: int
    credits_forfeited: int


def account_storage_prefix(*, account_id: int) -> str:
    """Where every output of the account's jobs lives (apps.jobs.services.job_output_prefix)."""
    return f"accounts/{account_id}/"


def account_is_deleted(*, account: Account) -> bool:
    return account.username == f"{TOMBSTONE_PREFIX}{account.id}"


def _active_jobs_cancel(*, account: Account) -> int:
    cancelled = 0
    for job_id in Job.objects.filter(account=account, status__in=Job.ACTIVE).values_list(
        "id", flat=True
    ):
        try:
            job_cancel(account=account, job_id=job_id)
        except ApplicationError:
            # It finished (or was cancelled) meanwhile: it is deleted below all the same.
            continue
        cancelled += 1
    return cancelled


def _outputs_delete(*, prefix: str) -> None:
    """After commit. A store that fails here leaves objects no row points at: deleting the
    account again (the command is idempotent on a tombstone) removes them."""
    try:
        get_storage().delete_prefix(prefix)
    except Exception:
        logger.exception("Could not delete the stored outputs under %s", prefix)


def account_delete(*, account: Account) -> AccountDeletion:
    jobs_cancelled = _active_jobs_cancel(account=account)
    with transaction.atomic():
        # Held to commit: no submission, grant or top-up lands between the forfeit and the end.
        locked = Account.objects.select_for_update().get(id=account.id)
        # A job submitted after the cancel pass above still holds a debit: cancel it too,
        # inside the lock, so it is refunded before the balance is forfeited.
        jobs_cancelled += _active_jobs_cancel(account=locked)
        locked.refresh_from_db(fields=["credit_balance"])
        forfeited = locked.credit_balance
        if forfeited:
            credits_forfeit(
                account_id=locked.id,
                amount=forfeited,
                description="Account deleted: remaining credits forfeited",
            )
        UsageCounter.objects.filter(account=locked).delete()
        IdempotencyRecord.objects.filter(account=locked).delete()
        Webhook.objects.filter(account=locked).delete()
        _count, per_model = Job.objects.filter(account=locked).delete()
        ApiKey.objects.filter(account=locked).delete()
        credentials_changed()  # API processes drop their cached lookups of these keys
        User.objects.filter(account=locked).delete()
        Account.objects.filter(id=locked.id).update(
            username=f"{TOMBSTONE_PREFIX}{locked.id}",
            email=f"{TOMBSTONE_PREFIX}{locked.id}@{TOMBSTONE_EMAIL_DOMAIN}",
            max_active_jobs=None,
        )
        prefix = account_storage_prefix(account_id=locked.id)
        transaction.on_commit(lambda: _outputs_delete(prefix=prefix))
    logger.info("Account %s deleted (%s credits forfeited)", account.id, forfeited)
    return AccountDeletion(
        account_id=account.id,
        jobs_cancelled=jobs_cancelled,
        jobs_deleted=per_model.get(Job._meta.label, 0),
        credits_forfeited=forfeited,
    )
