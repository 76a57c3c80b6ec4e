"""Job writes. Every state change is a compare-and-set: the loser of a race gets a 409.

A submission debits the ledger and creates the job in one transaction; the Celery task is
enqueued only after that transaction commits, on the model's own queue.
"""

import functools
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Field, Q, QuerySet
from django.utils import timezone

from apps.accounts.models import Account, ApiKey
from apps.billing.models import LedgerEntry
from apps.billing.services import (
    JOB_DEBIT_DESCRIPTION,
    credits_debit_for_job,
    credits_refund_for_job,
    job_debit_with,
)
from apps.common.exceptions import ApplicationError, Conflict, InvalidInput, TooManyRequests
from apps.common.metrics import credits_debited_observe, job_finished_observe
from apps.common.queues import (
    UNACKED_SCAN_LIMIT,
    broker_state,
    broker_unacked,
    broker_unacked_forget,
    task_push,
)
from apps.common.request_context import request_id_current
from apps.common.sql import row_json, rows_insert, rows_insert_from, rows_saved
from apps.jobs.availability import models_available, models_available_require
from apps.jobs.catalog import CleanedPipeline, CleanedSubmission, submission_clean
from apps.jobs.job_keys import job_key
from apps.jobs.limits import (
    account_active_count_sql,
    account_has_room,
    account_room_assumed,
    account_room_counted,
    queue_has_room,
)
from apps.jobs.models import Job, JobEvent
from apps.jobs.registry import MODELS
from apps.jobs.selectors import (
    job_get,
    job_output_prefix,
    protein_job_get,
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
    """Publish the job's task, then mark it published. A broker that is down is logged, not
    raised: the sweeper publishes pending jobs that were never marked within seconds. The mark
    is written after the publish on purpose: a process killed between the submission's commit
    and the publish leaves the job unmarked, so it is not left for the hour-long lost-message
    pass (measured in bench/cluster.py, where an API server is killed mid-run)."""
    time_limit = MODELS[model].time_limit
    if not task_push(
        RUN_JOB_TASK,
        args=[str(job_id)],
        queue=MODELS[model].queue,
        what=f"job {job_id}",
        task_id=str(job_id),  # lets a cancel revoke the running task by job id
        soft_time_limit=time_limit,
        time_limit=time_limit + settings.PHONOS_HARD_LIMIT_GRACE_SECONDS,
    ):
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            _ENQUEUED_SQL,
            [
                _job_field("enqueued_at").get_db_prep_value(timezone.now(), connection),
                _job_field("id").get_db_prep_value(job_id, connection),
                Job.Status.PENDING.value,
            ],
        )
    return True


_ENQUEUED_SQL = "UPDATE jobs_job SET enqueued_at = %s WHERE id = %s AND status = %s"
_ACCOUNT_LOCK_SQL = "SELECT id FROM accounts_account WHERE id = %s FOR UPDATE"


WAITING_FOR_DEPENDENCY = "waiting_for_dependency"


def _queue_capacity_check(*, new_jobs: int) -> None:
    if not queue_has_room(capacity=settings.PHONOS_QUEUE_CAPACITY, new_jobs=new_jobs):
        raise TooManyRequests(
            "The job queue is at capacity; please retry in a few minutes",
            error="Queue full",
            reason="queue_full",
            retry_after=60,
        )


def _too_many_active_jobs(limit: int) -> TooManyRequests:
    return TooManyRequests(
        f"This account already has {limit} active jobs, the most it may have at once; "
        "wait for some to finish",
        error="Too many active jobs",
        reason="active_jobs",
        retry_after=30,
    )


def _job_build(
    *,
    account: Account,
    api_key: ApiKey | None,
    submission: CleanedSubmission,
    job_id: uuid.UUID,
    key: str,
    cost: int,
    depends_on_id: uuid.UUID | None = None,
    **fields: Any,
) -> tuple[Job, JobEvent]:
    """The rows of a new job and its first event, unsaved."""
    job = Job(
        id=job_id,
        account=account,
        api_key=api_key,
        name=submission.name,
        model=submission.spec.id,
        sequence=submission.sequence,
        params=submission.params,
        cost_credits=cost,
        depends_on_id=depends_on_id,
        stage=fields.pop("stage", WAITING_FOR_DEPENDENCY if depends_on_id else "queued"),
        request_id=request_id_current(),
        webhook_url=submission.webhook.url if submission.webhook else "",
        webhook_events=list(submission.webhook.events) if submission.webhook else [],
        job_key=key,
        **fields,
    )
    # Not announced (apps.jobs.streams): streams follow one job each, and no stream can wait
    # on this one before the response names it; a stream opened then reads this event from
    # the table first. A Redis PUBLISH less per submission.
    return job, JobEvent(job_id=job.id, status=job.status, stage=job.stage, progress=None)


def _job_create(
    *,
    account: Account,
    api_key: ApiKey | None,
    submission: CleanedSubmission,
    job_id: uuid.UUID,
    key: str,
    depends_on_id: uuid.UUID | None = None,
    cost: int | None = None,
    active: bool = True,
    account_locked: bool = False,
    **fields: Any,
) -> Job:
    """Debit and create one job, in one transaction (the caller's, where it holds one); the
    caller publishes it. `fields` set the rest (a job served from a cached result is created
    completed). `account_locked`: the caller already holds the account's row lock in this
    transaction."""
    cost = submission.cost if cost is None else cost
    job, event = _job_build(
        account=account,
        api_key=api_key,
        submission=submission,
        job_id=job_id,
        key=key,
        cost=cost,
        depends_on_id=depends_on_id,
        **fields,
    )
    if cost > 0 and connection.vendor == "postgresql":
        if _job_debit_create(job=job, event=event, active=active, account_locked=account_locked):
            credits_debited_observe(model=job.model, amount=cost)
            return job
    # SQLite, a job that costs nothing, or the one statement above wrote nothing (a short
    # balance, or no room for another active job): the steps one by one, which raise the error.
    # The debit's conditional UPDATE locks the account row until commit, which also makes the
    # active-job count below exact under concurrent submissions near the limit (apps.jobs.limits).
    # One transaction (the caller's, if it holds one: no savepoint).
    with transaction.atomic(savepoint=False):
        if cost > 0:
            credits_debit_for_job(
                account_id=account.id, job_id=job_id, cost=cost, model=submission.spec.id
            )
        limit = account.active_job_limit
        if active and not account_has_room(account_id=account.id, limit=limit):
            raise _too_many_active_jobs(limit)
        # Hand-written INSERTs (apps.common.sql): compiling them was a good part of a
        # submission. Both rows in one statement: a round trip less per submission.
        rows_insert(job, event)
    return job


# The submission's writes in one statement, one round trip (PostgreSQL): the account's bounded
# active-job count where one is due, the debit and its ledger entry (apps.billing), then the job
# and its event, each written only if the entry was.
_JOB_CREATE_SQL = """WITH {count}{debit},
job_row AS ({job}),
event_row AS ({event})
SELECT {counted}, EXISTS (SELECT 1 FROM entry)"""
_ACTIVE_GUARD = " AND (SELECT n FROM active_count) < %s"


def _job_debit_create(*, job: Job, event: JobEvent, active: bool, account_locked: bool) -> bool:
    """Debit and write `job` and `event` in one statement, a transaction of its own unless the
    caller holds one (or a count is due, which takes the account's lock first). False: nothing
    was written (a short balance, or no room for another active job; the caller finds out
    which)."""
    account = job.account
    count_due = active and not account_room_assumed(
        account_id=account.id, limit=account.active_job_limit
    )
    if not count_due:
        return _job_debit_statement(job=job, event=event, count_due=False)
    with transaction.atomic(savepoint=False):
        if not account_locked:
            # The count must see every job committed before it: a statement's snapshot is
            # taken when it starts, so the lock cannot be taken by the statement that counts.
            _account_lock(account_id=account.id)
        return _job_debit_statement(job=job, event=event, count_due=True)


def _job_debit_statement(*, job: Job, event: JobEvent, count_due: bool) -> bool:
    account = job.account
    limit = account.active_job_limit
    count, guard = "", ""
    count_parameters: list[Any] = []
    guard_parameters: tuple[Any, ...] = ()
    if count_due:
        count_sql, count_parameters = account_active_count_sql(account_id=account.id, limit=limit)
        count = f"active_count (n) AS ({count_sql}), "
        guard, guard_parameters = _ACTIVE_GUARD, (limit,)
    debit, debit_parameters = job_debit_with(
        account_id=account.id,
        job_id=job.id,
        cost=job.cost_credits,
        entry="entry",
        guard=guard,
        guard_parameters=guard_parameters,
    )
    (job_insert, event_insert), insert_parameters = rows_insert_from("entry", job, event)
    statement = _JOB_CREATE_SQL.format(
        count=count,
        debit=debit,
        job=job_insert,
        event=event_insert,
        counted="(SELECT n FROM active_count)" if count_due else "NULL",
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [*count_parameters, *debit_parameters, *insert_parameters])
        counted, written = cursor.fetchone()
    if counted is not None and (written or counted >= limit):
        account_room_counted(account_id=account.id, limit=limit, counted=counted)
    if written:
        rows_saved(job, event)
    return bool(written)


def _account_lock(*, account_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_ACCOUNT_LOCK_SQL, [account_id])


# --- Job keys, result reuse and single-flight ---------------------------------------------------
def submission_key(*, submission: CleanedSubmission, account_id: int) -> str:
    """The job key of a checked submission (apps.jobs.job_keys). A receptor given as
    `protein_job_id` counts as that job's own key (its id, for a job from before keys)."""
    protein_job_key = None
    protein_job_id = submission.params.get("protein_job_id")
    if protein_job_id is not None:
        stored = (
            Job.objects.filter(account_id=account_id, id=protein_job_id)
            .values_list("job_key", flat=True)
            .first()
        )
        protein_job_key = stored or f"job:{protein_job_id}"
    return job_key(
        model_id=submission.spec.id,
        weights=submission.spec.weights_identity(),
        input_kind=submission.spec.input_kind,
        sequence=submission.sequence,
        params=submission.params,
        protein_job_key=protein_job_key,
    )


def _key_scope(*, account_id: int) -> Q:
    """Whose jobs a submission may reuse: the account's own, or every account's when the
    operator shares results (PHONOS_SHARED_RESULT_CACHE)."""
    return Q() if settings.PHONOS_SHARED_RESULT_CACHE else Q(account_id=account_id)


def reusable_job_find(*, key: str, account_id: int) -> Job | None:
    """The newest completed job with this key whose outputs are still stored. A job that is
    not deleted always has them: deleting a job keeps outputs that another job still shares."""
    return (
        Job.objects.filter(
            _key_scope(account_id=account_id),
            job_key=key,
            status=Job.Status.COMPLETED,
            deleted_at__isnull=True,
        )
        .exclude(output_file="")
        .order_by("-finished_at")
        .first()
    )


def _flight_leader_find(*, key: str, account_id: int) -> Job | None:
    """The job with this key that runs (or waits to run) for itself, if any."""
    return (
        Job.objects.filter(
            _key_scope(account_id=account_id),
            job_key=key,
            status__in=Job.ACTIVE,
            cached_from__isnull=True,
            deleted_at__isnull=True,
        )
        .exclude(stage=WAITING_FOR_DEPENDENCY)
        .order_by("created_at")
        .first()
    )


_SOURCE_COLUMNS = ("id", "outputs_of_id", "output_file", "result_summary", "metadata", "weights")
# The lock and both lookups in one round trip: a PL/pgSQL function (migration jobs 0004), since
# a statement cannot see what was committed while it waited for a lock it takes itself.
_KEY_MATCHES_SQL = "SELECT * FROM phonos_key_matches(%s, %s, %s, %s)"


@dataclass(frozen=True)
class _KeyMatches:
    source: Job | None  # the newest completed job with the key (reusable_job_find)
    leader_id: uuid.UUID | None  # the job in flight with the key (_flight_leader_find)


def _job_field(name: str) -> Field[Any, Any]:
    field = Job._meta.get_field(name)
    assert isinstance(field, Field)
    return field


def _key_matches_find(*, key: str, account: Account) -> _KeyMatches:
    """Make identical submissions look for each other one at a time, until commit, and look:
    each sees the job the one before created, so ten at once make one run. Within an account
    the row lock on the account does it (the debit takes it anyway); shared results need a lock
    on the key itself. Both are taken here, in the statement that looks (`_KEY_MATCHES_SQL`).
    SQLite (the embedded default) needs neither: its transactions begin IMMEDIATE, so a writer
    holds the whole database from its first statement to commit."""
    if connection.vendor != "postgresql":
        # The two querysets that the function's lookups are.
        leader = _flight_leader_find(key=key, account_id=account.id)
        return _KeyMatches(
            source=reusable_job_find(key=key, account_id=account.id),
            leader_id=leader.id if leader is not None else None,
        )
    shared = settings.PHONOS_SHARED_RESULT_CACHE
    key_lock = int(key[:15], 16) if shared else None
    with connection.cursor() as cursor:
        cursor.execute(_KEY_MATCHES_SQL, [account.id, key, shared, key_lock])
        rows = cursor.fetchall()
    source = leader_id = None
    for row in rows:
        if row[0] == 2:
            leader_id = row[1]
            continue
        values = {}
        for name, value in zip(_SOURCE_COLUMNS, row[1:], strict=True):
            field = _job_field(name)
            converters = connection.ops.get_db_converters(field.get_col(Job._meta.db_table))
            for converter in converters:
                value = converter(value, field, connection)
            from_db = getattr(field, "from_db_value", None)
            values[name] = from_db(value, None, connection) if from_db else value
        source = Job(**values)
        source._state.adding = False
        source._state.db = "default"
    return _KeyMatches(source=source, leader_id=leader_id)


def _cached_job_create(
    *,
    account: Account,
    api_key: ApiKey | None,
    submission: CleanedSubmission,
    source: Job,
    key: str,
) -> Job:
    """A job completed at once from `source`'s stored result: no worker, no GPU, the outputs
    shared by reference (`outputs_of`), priced PHONOS_CACHE_HIT_CREDITS."""
    now = timezone.now()
    job = _job_create(
        account=account,
        api_key=api_key,
        submission=submission,
        job_id=uuid.uuid4(),
        key=key,
        cost=settings.PHONOS_CACHE_HIT_CREDITS,
        active=False,
        account_locked=True,  # by _key_matches_find
        status=Job.Status.COMPLETED,
        cached=True,
        cached_from=source,
        outputs_of_id=source.outputs_of_id or source.id,
        output_file=source.output_file,
        result_summary=source.result_summary,
        metadata=source.metadata,
        weights=source.weights,
        stage="done",
        progress=1.0,
        finished_at=now,
    )
    job_finished_observe(job=job)
    _job_webhook_emit(job=job, event="job.completed")
    return job


def job_submit(
    *,
    account: Account,
    api_key: ApiKey | None,
    submission: CleanedSubmission,
    use_cache: bool = True,
) -> Job:
    """Charge and create a job. With the cache allowed (params.cache and the caller's
    `use_cache`, false for `Cache-Control: no-cache`): an identical completed job answers it at
    once, and an identical job in flight takes it along (single-flight); else it is queued.

    Without the cache, on PostgreSQL, far below the account's active-job limit and outside a
    caller's transaction, the whole charge is one statement (`_job_create`), its own
    transaction: no BEGIN and COMMIT round trips. Anything more is one transaction."""
    if "protein_job_id" in submission.params:
        protein_job_get(
            account_id=account.id,
            job_id=submission.params["protein_job_id"],
            max_residues=submission.spec.max_length,
        )
    key = submission_key(submission=submission, account_id=account.id)
    if use_cache and submission.use_cache:
        job = _job_submit_in_one_trip(
            account=account, api_key=api_key, submission=submission, key=key
        )
        if job is not None:
            return job
        return _job_submit_reusing(account=account, api_key=api_key, submission=submission, key=key)
    models_available_require({submission.spec.id})
    _queue_capacity_check(new_jobs=1)
    job = _job_create(
        account=account, api_key=api_key, submission=submission, job_id=uuid.uuid4(), key=key
    )
    transaction.on_commit(lambda: job_enqueue(job_id=job.id, model=job.model))
    return job


# A submission that may reuse a run, whole, in one statement: a PL/pgSQL function (migration
# jobs 0004), its own transaction in autocommit, so the account's row lock is held for the
# server's own work, no round trip to this process in between.
_JOB_SUBMIT_SQL = "SELECT * FROM phonos_job_submit(%s, %s, %s, %s, %s, %s, %s, %s, %s)"


def _job_submit_in_one_trip(
    *, account: Account, api_key: ApiKey | None, submission: CleanedSubmission, key: str
) -> Job | None:
    """PostgreSQL: the submission as `_job_submit_reusing` makes it where no stored result
    exists, as a leader or a follower, in one round trip. None: nothing was written, and the
    general path is to answer (a stored result to serve, no worker, a full queue, no room or
    a short balance: it serves it or raises the error)."""
    cost = submission.cost
    if (
        connection.vendor != "postgresql"
        or cost <= 0
        or not models_available({submission.spec.id})
        or not queue_has_room(capacity=settings.PHONOS_QUEUE_CAPACITY, new_jobs=1)
    ):
        return None
    limit = account.active_job_limit
    count_due = not account_room_assumed(account_id=account.id, limit=limit)
    job, event = _job_build(
        account=account,
        api_key=api_key,
        submission=submission,
        job_id=uuid.uuid4(),
        key=key,
        cost=cost,
    )
    shared = settings.PHONOS_SHARED_RESULT_CACHE
    with connection.cursor() as cursor:
        cursor.execute(
            _JOB_SUBMIT_SQL,
            [
                account.id,
                key,
                shared,
                int(key[:15], 16) if shared else None,
                row_json(job),
                cost,
                str(LedgerEntry.Kind.JOB_DEBIT),
                JOB_DEBIT_DESCRIPTION,
                limit if count_due else None,
            ],
        )
        outcome, leader_id, counted = cursor.fetchone()
    written = outcome in ("leader", "follower")
    if counted is not None and (written or outcome == "full"):
        account_room_counted(account_id=account.id, limit=limit, counted=counted)
    if not written:
        return None
    if leader_id is not None:
        job.cached, job.cached_from_id, job.outputs_of_id = True, leader_id, leader_id
    rows_saved(job, event)
    credits_debited_observe(model=job.model, amount=cost)
    if leader_id is None:
        transaction.on_commit(lambda: job_enqueue(job_id=job.id, model=job.model))
    return job


@transaction.atomic
def _job_submit_reusing(
    *, account: Account, api_key: ApiKey | None, submission: CleanedSubmission, key: str
) -> Job:
    matches = _key_matches_find(key=key, account=account)
    source = matches.source
    if source is not None:
        # A stored result needs no worker: it is served even while none is up.
        return _cached_job_create(
            account=account, api_key=api_key, submission=submission, source=source, key=key
        )
    models_available_require({submission.spec.id})
    _queue_capacity_check(new_jobs=1)
    leader_id = matches.leader_id
    if leader_id is not None:
        # Charged in full like any job: should the leader be cancelled, this one runs.
        # Completed from the leader's run, it is refunded down to the reuse price.
        return _job_create(
            account=account,
            api_key=api_key,
            submission=submission,
            job_id=uuid.uuid4(),
            key=key,
            cached=True,
            cached_from_id=leader_id,
            outputs_of_id=leader_id,
            account_locked=True,
        )
    job = _job_create(
        account=account,
        api_key=api_key,
        submission=submission,
        job_id=uuid.uuid4(),
        key=key,
        account_locked=True,
    )
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
        key=submission_key(submission=pipeline.fold, account_id=account.id),
    )
    dock = _job_create(
        account=account,
        api_key=api_key,
        submission=pipeline.dock,
        job_id=uuid.uuid4(),
        key=submission_key(submission=pipeline.dock, account_id=account.id),
        depends_on_id=fold.id,
    )
    transaction.on_commit(lambda: job_enqueue(job_id=fold.id, model=fold.model))
    return Pipeline(fold=fold, dock=dock)


def _dependents_release(*, job_id: uuid.UUID) -> None:
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
            transaction.on_commit(functools.partial(job_enqueue, job_id=dependent_id, model=model))


def _dependents_fail(*, job_id: uuid.UUID, reason: str) -> None:
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
    _followers_promote(leader_id=job.id)
    transaction.on_commit(lambda: job_stop_task(job_id=job.id))
    return job


def _followers(*, leader_id: uuid.UUID | str) -> QuerySet[Job]:
    """The jobs riding on this one's run (single-flight), oldest first."""
    # Django takes a UUID's text for a foreign key to a UUID primary key, as it does for the
    # key itself; django-stubs types the `_id` lookup without the text.
    followers = Job.objects.filter(cached_from_id=leader_id, status__in=Job.ACTIVE)  # type: ignore[misc]
    return followers.order_by("created_at")


def _followers_promote(*, leader_id: uuid.UUID) -> None:
    """The leader was cancelled: its oldest follower runs in its place, the others follow it."""
    followers = list(_followers(leader_id=leader_id).values_list("id", "model"))
    if not followers:
        return
    (new_leader_id, model), others = followers[0], [job_id for job_id, _ in followers[1:]]
    now = timezone.now()
    Job.objects.filter(id=new_leader_id).update(
        status=Job.Status.PENDING,
        stage="queued",
        progress=None,
        cached=False,
        cached_from=None,
        outputs_of=None,
        updated_at=now,
    )
    job_event_record(job_id=new_leader_id, status=Job.Status.PENDING, stage="queued")
    Job.objects.filter(id__in=others).update(
        cached_from_id=new_leader_id, outputs_of_id=new_leader_id, updated_at=now
    )
    transaction.on_commit(lambda: job_enqueue(job_id=new_leader_id, model=model))


def _followers_mirror(*, leader_id: uuid.UUID | str, stage: str, progress: float | None) -> None:
    """Each follower shows its leader's progress, as its own events (and `job.started`)."""
    now = timezone.now()
    for follower in list(_followers(leader_id=leader_id)):
        changed = Job.objects.filter(id=follower.id, status=follower.status).update(
            status=Job.Status.RUNNING, stage=stage, progress=progress, updated_at=now
        )
        if changed != 1:
            continue
        job_event_record(
            job_id=follower.id, status=Job.Status.RUNNING, stage=stage, progress=progress
        )
        if follower.status == Job.Status.PENDING:
            follower.status, follower.stage = Job.Status.RUNNING, stage
            _job_webhook_emit(job=follower, event="job.started")


def _followers_complete(*, leader: Job) -> None:
    """The leader's run completed: so does each follower, sharing its outputs by reference,
    refunded down to the reuse price."""
    now = timezone.now()
    for follower in list(_followers(leader_id=leader.id)):
        changed = Job.objects.filter(id=follower.id, status=follower.status).update(
            status=Job.Status.COMPLETED,
            stage="done",
            progress=1.0,
            output_file=leader.output_file,
            result_summary=leader.result_summary,
            metadata=leader.metadata,
            weights=leader.weights,
            outputs_of_id=leader.id,
            finished_at=now,
            updated_at=now,
        )
        if changed != 1:
            continue
        job_event_record(
            job_id=follower.id, status=Job.Status.COMPLETED, stage="done", progress=1.0
        )
        entry = credits_refund_for_job(
            account_id=follower.account_id,
            job_id=follower.id,
            reason="Served from an identical job's run",
            amount=follower.cost_credits - settings.PHONOS_CACHE_HIT_CREDITS,
        )
        if entry is not None:
            Job.objects.filter(id=follower.id).update(credits_refunded=entry.amount)
        follower.refresh_from_db()
        job_finished_observe(job=follower)
        _job_webhook_emit(job=follower, event="job.completed")
        _dependents_release(job_id=follower.id)


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
    # Outputs are shared by reference (result reuse): they go with the last job showing them.
    owner_id = job.outputs_of_id or job.id
    Job.objects.select_for_update().filter(id=owner_id).values_list("id").first()
    sharers = Job.objects.filter(Q(id=owner_id) | Q(outputs_of_id=owner_id)).filter(
        deleted_at__isnull=True
    )
    if not sharers.exists():
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
    # A job a worker runs is its own run, even one that was following another (no task is
    # published for a follower; one delivered anyway runs and stops following).
    changed = Job.objects.filter(id=job.id, status=job.status, attempts=job.attempts).update(
        cached=False,
        cached_from=None,
        outputs_of=None,
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
    _followers_mirror(leader_id=job.id, stage=job.stage, progress=None)
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
        _followers_mirror(leader_id=job_id, stage=stage, progress=progress)
    return changed == 1


def job_heartbeat(*, job_id: uuid.UUID | str) -> bool:
    return (
        Job.objects.filter(id=job_id, status=Job.Status.RUNNING).update(heartbeat_at=timezone.now())
        == 1
    )


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class SweepReport:
    republished: list[str]
    failed: list[str]


_MARK_MARGIN = timedelta(seconds=1)


def _published_and_lost(*, stale_before: datetime, republish_before: datetime) -> list[Job]:
    """Pending jobs published before `stale_before` whose message neither waits in its queue nor
    is held by a worker: a worker killed between taking the message off the queue and recording
    it as unacknowledged (kombu's Redis transport does the two in separate steps) lost it, and
    without this the job would wait PHONOS_REPUBLISH_AFTER_SECONDS. A queue delivers its oldest
    message first, so a job published before the oldest one still waiting is no longer in it;
    the mark (`enqueued_at`) follows its publish by milliseconds, so jobs published within
    _MARK_MARGIN of that one are not judged. A false alarm (the job's message taken in the
    instant between the reads) only publishes a duplicate, which the worker's claim drops."""
    candidates = list(
        Job.objects.filter(
            status=Job.Status.PENDING,
            cached_from__isnull=True,
            enqueued_at__lt=stale_before,
            enqueued_at__gte=republish_before,  # older ones: the sweep's own pass
        )
        .exclude(stage=WAITING_FOR_DEPENDENCY)
        .order_by("enqueued_at")[:UNACKED_SCAN_LIMIT]
    )
    by_queue: dict[str, list[Job]] = {}
    for job in candidates:
        by_queue.setdefault(MODELS[job.model].queue, []).append(job)
    broker = broker_state(by_queue) if by_queue else None
    if broker is None:
        return []
    lost: list[Job] = []
    for queue, oldest in broker.oldest_waiting.items():
        waiting_since = None
        if oldest is not None:
            oldest_id = _uuid_or_none(oldest)
            waiting_since = (
                Job.objects.filter(id=oldest_id).values_list("enqueued_at", flat=True).first()
                if oldest_id is not None
                else None
            )
            if waiting_since is None:
                continue  # its job is gone or not yet marked: nothing to compare with
        lost += [
            job
            for job in by_queue[queue]
            if str(job.id) not in broker.held
            and (
                waiting_since is None
                or (job.enqueued_at and job.enqueued_at < waiting_since - _MARK_MARGIN)
            )
        ]
    return lost


def job_sweep() -> SweepReport:
    """Hand lost jobs to a worker again.

    Pending jobs whose publication failed (broker down at submit), whose message a dead worker
    took (held unacknowledged in the broker past PHONOS_STALE_AFTER_SECONDS) or whose message
    seems lost, and running jobs whose worker stopped sending heartbeats, are published again; a job that
    has used up its attempts fails and is refunded. Running a job twice is harmless: the worker
    claims it by compare-and-set and writes the same output keys.
    """
    now = timezone.now()
    republish_before = now - timedelta(seconds=settings.PHONOS_REPUBLISH_AFTER_SECONDS)
    stale_before = now - timedelta(seconds=settings.PHONOS_STALE_AFTER_SECONDS)
    # A pipeline's dock that still waits for its fold is not lost: job_complete publishes it.
    # A follower has no task of its own: its leader's run completes it.
    unpublished = (
        Job.objects.filter(status=Job.Status.PENDING, cached_from__isnull=True)
        .exclude(stage=WAITING_FOR_DEPENDENCY)
        .filter(
            Q(enqueued_at__isnull=True, created_at__lt=now - timedelta(seconds=2))
            | Q(enqueued_at__lt=republish_before)
        )
    )
    stale = Job.objects.filter(
        status=Job.Status.RUNNING, heartbeat_at__lt=stale_before, cached_from__isnull=True
    )
    # Published and taken by a worker that died before the job started: the message waits in
    # the broker for its visibility timeout (hours). A live worker starts what it takes at once.
    held = broker_unacked(older_than_seconds=settings.PHONOS_STALE_AFTER_SECONDS)
    held_jobs = {_uuid_or_none(task_id): tag for task_id, tag in held.items()}
    held_jobs.pop(None, None)
    taken_and_lost = list(
        Job.objects.filter(
            id__in=list(held_jobs),
            status=Job.Status.PENDING,
            enqueued_at__lt=stale_before,
            cached_from__isnull=True,
        ).exclude(stage=WAITING_FOR_DEPENDENCY)
    )
    republished, failed = [], []
    for job in taken_and_lost:
        if job_enqueue(job_id=job.id, model=job.model):
            broker_unacked_forget(held_jobs[job.id])
            republished.append(str(job.id))
    for job in _published_and_lost(stale_before=stale_before, republish_before=republish_before):
        if job_enqueue(job_id=job.id, model=job.model):
            republished.append(str(job.id))
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
        # What the runner reports it loaded; the key used the declared identity.
        weights=str(metadata.get("weights") or "")[:500],
        finished_at=now,
        updated_at=now,
    )
    if changed != 1:
        return False
    job_event_record(job_id=job_id, status=Job.Status.COMPLETED, stage="done", progress=1.0)
    job = Job.objects.get(id=job_id)
    job_finished_observe(job=job)
    _job_webhook_emit(job=job, event="job.completed")
    _dependents_release(job_id=job.id)
    _followers_complete(leader=job)
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
    # The same work would fail the same way for the jobs riding on this run.
    for follower_id in list(_followers(leader_id=job.id).values_list("id", flat=True)):
        job_fail(job_id=follower_id, error=error)
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
            with transaction.atomic():  # a savepoint: a refused item leaves the others
                job = job_submit(account=account, api_key=api_key, submission=submission)
        except ApplicationError as error:
            results.append(BatchItemResult(index=index, error=error.error, message=error.message))
        else:
            results.append(BatchItemResult(index=index, job=job))
    return results


def job_run_metrics_record(
    *, job_id: uuid.UUID | str, run_seconds: float, batch_size: int | None
) -> None:
    """The model's wall time on the job's latest attempt and the size of the forward pass it
    shared, which `GET /v1/jobs/{id}` shows as `metrics`."""
    Job.objects.filter(id=job_id).update(
        run_seconds=run_seconds, batch_size=batch_size, updated_at=timezone.now()
    )
