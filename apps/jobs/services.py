"""Job writes. Every state change is a compare-and-set: the loser of a race gets a 409.

A submission debits the ledger and creates the job in one transaction; the Celery task is
enqueued only after that transaction commits, on the model's own queue.
"""

import functools
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.accounts.models import Account, ApiKey
from apps.billing.services import credits_debit_for_job, credits_refund_for_job
from apps.common.exceptions import ApplicationError, Conflict, InvalidInput, TooManyRequests
from apps.common.metrics import job_finished_observe
from apps.common.queues import task_publish
from apps.common.request_context import request_id_current
from apps.jobs.availability import models_available_require
from apps.jobs.catalog import MODELS, CleanedPipeline, CleanedSubmission, submission_clean
from apps.jobs.models import Job, JobEvent
from apps.jobs.selectors import (
    active_job_count,
    job_get,
    job_output_prefix,
    protein_job_get,
    queued_job_count,
)
from apps.jobs.streams import job_event_announce
from apps.webhooks.services import RequestWebhook, webhook_event_emit

logger = logging.getLogger(__name__)

RUN_JOB_TASK = "workers.tasks.run_job"


def _job_webhook_emit(*, job: Job, event: str) -> None:
    """The job's state change as a webhook event: jobs builds the payload, webhooks sends it."""
    completed = job.status == Job.Status.COMPLETED and bool(job.output_file)
    data = {
        "job_id": str(job.id),
        "status": str(job.status),
        "model": job.model,
        "download_url": job.download_path if completed else None,
    }
    webhook_event_emit(
        account_id=job.account_id,
        event=event,
        data=data,
        request_id=job.request_id,
        job_id=job.id,
        request_webhook=RequestWebhook(url=job.webhook_url, events=tuple(job.webhook_events))
        if job.webhook_url
        else None,
    )


def job_enqueue(*, job_id: uuid.UUID, model: str) -> bool:
    """Publish the job's task. A broker that is down is logged, not raised: the sweeper
    re-enqueues pending jobs whose task never arrived."""
    time_limit = settings.PHONOS_TIME_LIMITS[model]
    if not task_publish(
        RUN_JOB_TASK,
        args=[str(job_id)],
        queue=MODELS[model].queue,
        what=f"job {job_id}",
        task_id=str(job_id),  # lets a cancel revoke the running task by job id
        soft_time_limit=time_limit,
        time_limit=time_limit + settings.PHONOS_HARD_LIMIT_GRACE_SECONDS,
    ):
        return False
    Job.objects.filter(id=job_id, status=Job.Status.PENDING).update(enqueued_at=timezone.now())
    return True


WAITING_FOR_DEPENDENCY = "waiting_for_dependency"


def _queue_capacity_check(*, new_jobs: int) -> None:
    if queued_job_count() + new_jobs > settings.PHONOS_QUEUE_CAPACITY:
        raise TooManyRequests(
            "The job queue is at capacity; please retry in a few minutes",
            error="Queue full",
            reason="queue_full",
            retry_after=60,
        )


def _job_create(
    *,
    account: Account,
    api_key: ApiKey | None,
    submission: CleanedSubmission,
    job_id: uuid.UUID,
    depends_on_id: uuid.UUID | None = None,
) -> Job:
    """Debit and create one job; the caller holds the transaction and publishes it."""
    # The debit's conditional UPDATE locks the account row until commit, which also makes the
    # active-job count below exact under concurrent submissions.
    credits_debit_for_job(
        account_id=account.id, job_id=job_id, cost=submission.cost, model=submission.spec.id
    )
    limit = account.active_job_limit
    if active_job_count(account_id=account.id) >= limit:
        raise TooManyRequests(
            f"This account already has {limit} active jobs, the most it may have at once; "
            "wait for some to finish",
            error="Too many active jobs",
            reason="active_jobs",
            retry_after=30,
        )
    job = Job.objects.create(
        id=job_id,
        account=account,
        api_key=api_key,
        name=submission.name,
        model=submission.spec.id,
        sequence=submission.sequence,
        params=submission.params,
        cost_credits=submission.cost,
        depends_on_id=depends_on_id,
        stage=WAITING_FOR_DEPENDENCY if depends_on_id else "queued",
        request_id=request_id_current(),
        webhook_url=submission.webhook.url if submission.webhook else "",
        webhook_events=list(submission.webhook.events) if submission.webhook else [],
    )
    job_event_record(job_id=job.id, status=job.status, stage=job.stage)
    return job


@transaction.atomic
def job_submit(*, account: Account, api_key: ApiKey | None, submission: CleanedSubmission) -> Job:
    models_available_require({submission.spec.id})
    _queue_capacity_check(new_jobs=1)
    if "protein_job_id" in submission.params:
        protein_job_get(
            account_id=account.id,
            job_id=submission.params["protein_job_id"],
            max_residues=submission.spec.max_length,
        )
    job = _job_create(account=account, api_key=api_key, submission=submission, job_id=uuid.uuid4())
    transaction.on_commit(lambda: job_enqueue(job_id=job.id, model=job.model))
    return job


@dataclass(frozen=True)
class Pipeline:
    fold: Job
    dock: Job


@transaction.atomic
def pipeline_submit(
    *, account: Account, api_key: ApiKey | None, pipeline: CleanedPipeline
) -> Pipeline:
    """Charge a fold and a dock together; the dock waits, unpublished, until the fold
    completes (job_complete publishes it) and fails, refunded, if the fold does not."""
    models_available_require({pipeline.fold.spec.id, pipeline.dock.spec.id})
    _queue_capacity_check(new_jobs=2)
    fold = _job_create(
        account=account,
        api_key=api_key,
        submission=pipeline.fold,
        job_id=pipeline.fold_job_id,
    )
    dock = _job_create(
        account=account,
        api_key=api_key,
        submission=pipeline.dock,
        job_id=uuid.uuid4(),
        depends_on_id=fold.id,
    )
    transaction.on_commit(lambda: job_enqueue(job_id=fold.id, model=fold.model))
    return Pipeline(fold=fold, dock=dock)


def _dependents_release(*, job_id: uuid.UUID | str) -> None:
    """The fold completed: its waiting docks go to the queue once this transaction commits."""
    now = timezone.now()
    waiting = Job.objects.filter(
        depends_on_id=job_id, status=Job.Status.PENDING, stage=WAITING_FOR_DEPENDENCY
    ).values_list("id", "model")
    for dependent_id, model in list(waiting):
        changed = Job.objects.filter(
            id=dependent_id, status=Job.Status.PENDING, stage=WAITING_FOR_DEPENDENCY
        ).update(stage="queued", updated_at=now)
        if changed == 1:
            job_event_record(job_id=dependent_id, status=Job.Status.PENDING, stage="queued")
            transaction.on_commit(
                lambda dependent_id=dependent_id, model=model: job_enqueue(
                    job_id=dependent_id, model=model
                )
            )


def _dependents_fail(*, job_id: uuid.UUID | str, reason: str) -> None:
    waiting = Job.objects.filter(
        depends_on_id=job_id, status=Job.Status.PENDING, stage=WAITING_FOR_DEPENDENCY
    ).values_list("id", flat=True)
    for dependent_id in list(waiting):
        job_fail(job_id=dependent_id, error=f"The fold job {job_id} {reason}")


def _refund(job: Job, *, reason: str) -> None:
    entry = credits_refund_for_job(account_id=job.account_id, job_id=job.id, reason=reason)
    if entry is not None:
        Job.objects.filter(id=job.id).update(credits_refunded=entry.amount)
        job.credits_refunded = entry.amount


@transaction.atomic
def job_cancel(*, account: Account, job_id: uuid.UUID | str) -> Job:
    job = job_get(account=account, job_id=job_id)
    if job.is_terminal:
        raise InvalidInput(f"Job {job.id} is already {job.status} and cannot be cancelled")
    now = timezone.now()
    changed = Job.objects.filter(id=job.id, status=job.status).update(
        status=Job.Status.CANCELLED, stage="done", finished_at=now, updated_at=now
    )
    if changed != 1:
        current = Job.objects.values_list("status", flat=True).get(id=job.id)
        raise Conflict(f"Job {job.id} changed to {current} while it was being cancelled")
    job.refresh_from_db()
    job_event_record(job_id=job.id, status=job.status, stage=job.stage)
    job_finished_observe(job=job)
    _refund(job, reason="Job cancelled")
    _job_webhook_emit(job=job, event="job.cancelled")
    _dependents_fail(job_id=job.id, reason="was cancelled")
    transaction.on_commit(lambda: job_stop_task(job_id=job.id))
    return job


def job_stop_task(*, job_id: uuid.UUID) -> None:
    """Tell workers to stop a cancelled job; the worker also re-checks status before writing."""
    from phonos.celery import app as celery_app

    try:
        celery_app.control.revoke(str(job_id), terminate=True, signal="SIGTERM")
    except Exception:
        logger.warning("Could not broadcast revoke for job %s", job_id, exc_info=True)


@transaction.atomic
def job_delete(*, account: Account, job_id: uuid.UUID | str) -> Job:
    job = job_get(account=account, job_id=job_id)
    if not job.is_terminal:
        raise InvalidInput(f"Job {job.id} is still {job.status}; cancel it before deleting it")
    changed = Job.objects.filter(id=job.id, deleted_at__isnull=True).update(
        deleted_at=timezone.now()
    )
    if changed != 1:
        raise Conflict(f"Job {job.id} is already being deleted")
    output_prefix = job_output_prefix(job=job)
    transaction.on_commit(lambda: _delete_outputs(prefix=output_prefix))
    return job


def _delete_outputs(*, prefix: str) -> None:
    from apps.jobs.storage import get_storage

    try:
        get_storage().delete_prefix(prefix)
    except Exception:
        logger.warning("Could not delete outputs under %s", prefix, exc_info=True)


# --- Worker-side transitions ---------------------------------------------------------------------


@transaction.atomic
def job_start(*, job_id: uuid.UUID | str) -> Job | None:
    """pending → running (or running again after a worker died). None if the job is done."""
    now = timezone.now()
    job = Job.objects.filter(id=job_id).first()
    if job is None or job.status not in Job.ACTIVE:
        return None
    if job.attempts >= settings.PHONOS_JOB_MAX_ATTEMPTS:
        # A poison job: each delivery killed its worker process (out of memory, a crash), and
        # Celery hands it back after every death. Give it up so the queue moves on.
        job_fail(
            job_id=job.id,
            error=f"The worker running this job stopped {job.attempts} times (out of memory "
            "or a crash); the job was given up and refunded",
        )
        return None
    changed = Job.objects.filter(id=job.id, status=job.status, attempts=job.attempts).update(
        status=Job.Status.RUNNING,
        stage="loading_model",
        progress=None,
        started_at=job.started_at or now,
        heartbeat_at=now,
        attempts=job.attempts + 1,
        updated_at=now,
    )
    if changed != 1:
        return None
    # A re-run after a worker died is not news to the customer: only pending → running is.
    was_pending = job.status == Job.Status.PENDING
    job.refresh_from_db()
    job_event_record(job_id=job.id, status=job.status, stage=job.stage)
    if was_pending:
        _job_webhook_emit(job=job, event="job.started")
    return job


def job_event_record(
    *, job_id: uuid.UUID | str, status: str, stage: str, progress: float | None = None
) -> None:
    JobEvent.objects.create(job_id=job_id, status=status, stage=stage, progress=progress)
    # Wakes the streams following this job; they read the event itself from the database.
    transaction.on_commit(functools.partial(job_event_announce, job_id=job_id))


@transaction.atomic
def job_progress(*, job_id: uuid.UUID | str, stage: str, progress: float | None = None) -> bool:
    """Record a stage change; False once the job is no longer running (cancelled)."""
    now = timezone.now()
    changed = Job.objects.filter(id=job_id, status=Job.Status.RUNNING).update(
        stage=stage, progress=progress, heartbeat_at=now, updated_at=now
    )
    if changed == 1:
        job_event_record(job_id=job_id, status=Job.Status.RUNNING, stage=stage, progress=progress)
    return changed == 1


def job_heartbeat(*, job_id: uuid.UUID | str) -> bool:
    return (
        Job.objects.filter(id=job_id, status=Job.Status.RUNNING).update(heartbeat_at=timezone.now())
        == 1
    )


@dataclass(frozen=True)
class SweepReport:
    republished: list[str]
    failed: list[str]


def job_sweep() -> SweepReport:
    """Hand lost jobs to a worker again.

    Pending jobs whose publication failed (broker down at submit) or whose message seems lost,
    and running jobs whose worker stopped sending heartbeats, are published again; a job that
    has used up its attempts fails and is refunded. Running a job twice is harmless: the worker
    claims it by compare-and-set and writes the same output keys.
    """
    now = timezone.now()
    republish_before = now - timedelta(seconds=settings.PHONOS_REPUBLISH_AFTER_SECONDS)
    stale_before = now - timedelta(seconds=settings.PHONOS_STALE_AFTER_SECONDS)
    # A pipeline's dock that still waits for its fold is not lost: job_complete publishes it.
    unpublished = (
        Job.objects.filter(status=Job.Status.PENDING)
        .exclude(stage=WAITING_FOR_DEPENDENCY)
        .filter(
            Q(enqueued_at__isnull=True, created_at__lt=now - timedelta(seconds=2))
            | Q(enqueued_at__lt=republish_before)
        )
    )
    stale = Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=stale_before)
    republished, failed = [], []
    for job in list(unpublished) + list(stale):
        if job.status == Job.Status.RUNNING and job.attempts >= settings.PHONOS_JOB_MAX_ATTEMPTS:
            if job_fail(
                job_id=job.id,
                error=f"The worker running this job stopped {job.attempts} times; "
                "the job was given up and refunded",
            ):
                failed.append(str(job.id))
            continue
        if job_enqueue(job_id=job.id, model=job.model):
            if job.status == Job.Status.RUNNING:
                Job.objects.filter(id=job.id, status=Job.Status.RUNNING).update(heartbeat_at=now)
            republished.append(str(job.id))
    return SweepReport(republished=republished, failed=failed)


@transaction.atomic
def job_complete(
    *,
    job_id: uuid.UUID | str,
    output_file: str,
    summary: dict[str, Any],
    metadata: dict[str, Any],
) -> bool:
    now = timezone.now()
    changed = Job.objects.filter(id=job_id, status=Job.Status.RUNNING).update(
        status=Job.Status.COMPLETED,
        stage="done",
        progress=1.0,
        output_file=output_file,
        result_summary=summary,
        metadata=metadata,
        finished_at=now,
        updated_at=now,
    )
    if changed != 1:
        return False
    job_event_record(job_id=job_id, status=Job.Status.COMPLETED, stage="done", progress=1.0)
    job = Job.objects.get(id=job_id)
    job_finished_observe(job=job)
    _job_webhook_emit(job=job, event="job.completed")
    _dependents_release(job_id=job_id)
    return True


@transaction.atomic
def job_fail(*, job_id: uuid.UUID | str, error: str) -> bool:
    job = Job.objects.filter(id=job_id).first()
    if job is None or job.status not in Job.ACTIVE:
        return False
    now = timezone.now()
    changed = Job.objects.filter(id=job.id, status=job.status).update(
        status=Job.Status.FAILED,
        stage="done",
        error=error[:5000],
        finished_at=now,
        updated_at=now,
    )
    if changed != 1:
        return False
    job_event_record(job_id=job.id, status=Job.Status.FAILED, stage="done")
    _refund(job, reason="Job failed")
    job.refresh_from_db()
    job_finished_observe(job=job)
    _job_webhook_emit(job=job, event="job.failed")
    _dependents_fail(job_id=job.id, reason=f"failed: {error}")
    return True


@dataclass(frozen=True)
class BatchItemResult:
    index: int
    job: Job | None = None
    error: str | None = None
    message: str | None = None


@transaction.atomic
def job_submit_batch(
    *, account: Account, api_key: ApiKey | None, items: list[Any]
) -> list[BatchItemResult]:
    """Submit each item on its own savepoint: a bad or unaffordable item is reported and
    charged nothing, and the others go ahead."""
    if not isinstance(items, list) or not items:
        raise InvalidInput("jobs must be a non-empty list of prediction requests")
    if len(items) > settings.PHONOS_MAX_BATCH_JOBS:
        raise InvalidInput(
            f"jobs has {len(items)} items; a batch holds at most {settings.PHONOS_MAX_BATCH_JOBS}"
        )
    # A model no worker serves refuses the whole batch (503) before any item is charged.
    models_available_require(
        {
            item["model"]
            for item in items
            if isinstance(item, dict) and isinstance(item.get("model"), str)
            if item["model"] in MODELS
        }
    )
    results = []
    for index, item in enumerate(items):
        try:
            submission = submission_clean(item)
            job = job_submit(account=account, api_key=api_key, submission=submission)
        except ApplicationError as error:
            results.append(BatchItemResult(index=index, error=error.error, message=error.message))
        else:
            results.append(BatchItemResult(index=index, job=job))
    return results
