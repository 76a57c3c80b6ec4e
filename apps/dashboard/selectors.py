"""Reads behind the dashboard pages that no other domain offers as one call."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.accounts.models import Account, ApiKey
from apps.common.exceptions import InvalidInput, NotFound
from apps.jobs.models import Job
from apps.jobs.registry import FOLD_MODEL_TYPE, MODELS
from apps.jobs.selectors import job_get
from apps.jobs.services import job_output_prefix
from apps.jobs.storage import get_storage


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


def job_structure_text(*, account: Account, job_id: str) -> str:
    """The PDB text of one of the account's completed jobs, from the same storage as downloads."""
    job = job_get(account=account, job_id=job_id)
    if job.status != Job.Status.COMPLETED or not job.output_file.endswith(".pdb"):
        raise InvalidInput(f"Job {job.id} has no finished structure to dock against")
    try:
        with get_storage().open(job_output_prefix(job=job) + job.output_file) as stream:
            return stream.read().decode()
    except FileNotFoundError:
        raise NotFound(f"The structure of job {job.id} is no longer stored") from None


@dataclass(frozen=True)
class PackOffer:
    id: str
    credits: int
    price_cents: int


# Shown (with buying disabled) while apps.billing lists no packs of its own.
FALLBACK_PACKS = (
    PackOffer("starter", 1000, 1000),
    PackOffer("lab", 10000, 9000),
    PackOffer("institute", 100000, 80000),
)


def credit_pack_offers() -> list[PackOffer]:
    """The packs of apps.billing (`PHONOS_CREDIT_PACKS`), or the fallback list before it exists."""
    from apps.billing import selectors as billing_selectors

    pack_list = getattr(billing_selectors, "credit_pack_list", None)
    if pack_list is None:
        return list(FALLBACK_PACKS)
    return [PackOffer(pack.id, pack.credits, pack.price_cents) for pack in pack_list()]


def checkout_service() -> Callable[..., Any] | None:
    """apps.billing's Stripe checkout (`checkout_session_create`), when it exists and Stripe is
    configured on this deployment; None otherwise, and the page shows buying as unavailable."""
    from apps.billing import services as billing_services

    checkout = getattr(billing_services, "checkout_session_create", None)
    try:
        from apps.billing.stripe_client import stripe_payments_enabled
    except ImportError:
        return checkout
    return checkout if stripe_payments_enabled() else None
