"""Reads behind the dashboard pages that no other domain offers as one call."""

from apps.accounts.models import Account, ApiKey
from apps.jobs.models import Job
from apps.jobs.registry import FOLD_MODEL_TYPE, MODELS


def api_key_list(*, account: Account) -> list[ApiKey]:
    return list(ApiKey.objects.filter(account=account).order_by("revoked_at", "-created_at"))


def fold_jobs_for_docking(*, account: Account, limit: int = 50) -> list[Job]:
    """The account's finished structure predictions, offered as docking receptors."""
    return list(
        Job.objects.filter(
            account=account,
            deleted_at__isnull=True,
            status=Job.Status.COMPLETED,
            model__in=[spec.id for spec in MODELS.values() if spec.type == FOLD_MODEL_TYPE],
        ).order_by("-created_at")[:limit]
    )
