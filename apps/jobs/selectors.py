import uuid
from typing import Any

from django.db.models import Count, Q, QuerySet

from apps.accounts.models import Account
from apps.common.exceptions import NotFound
from apps.jobs.models import Job


def _visible_jobs(*, account: Account) -> QuerySet[Job]:
    return Job.objects.filter(account=account, deleted_at__isnull=True)


def job_get(*, account: Account, job_id: uuid.UUID | str) -> Job:
    """A job of this account; another tenant's job answers exactly like a missing one."""
    try:
        job_uuid = uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound(f"Job {job_id} not found") from None
    job = _visible_jobs(account=account).filter(id=job_uuid).first()
    if job is None:
        raise NotFound(f"Job {job_id} not found")
    return job


def job_list(
    *,
    account: Account,
    status: str | None = None,
    model: str | None = None,
    search: str | None = None,
) -> QuerySet[Job]:
    jobs = _visible_jobs(account=account)
    if status:
        jobs = jobs.filter(status=status)
    if model:
        jobs = jobs.filter(model=model)
    if search:
        jobs = jobs.filter(name__icontains=search)
    return jobs.order_by("-created_at", "-id")


def job_counts(*, account: Account) -> dict[str, Any]:
    counts = _visible_jobs(account=account).aggregate(
        total=Count("id"),
        completed=Count("id", filter=Q(status=Job.Status.COMPLETED)),
        active=Count("id", filter=Q(status__in=Job.ACTIVE)),
        failed=Count("id", filter=Q(status=Job.Status.FAILED)),
        cancelled=Count("id", filter=Q(status=Job.Status.CANCELLED)),
    )
    return counts


def active_job_count(*, account_id: int) -> int:
    return Job.objects.filter(account_id=account_id, status__in=Job.ACTIVE).count()


def queued_job_count() -> int:
    return Job.objects.filter(status=Job.Status.PENDING).count()
