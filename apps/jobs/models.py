import uuid
from collections.abc import Iterable
from typing import Any

from django.db import models
from django.db.models import F, Lookup, Q
from django.db.models.lookups import Exact, In
from django.db.models.sql.where import AND

from apps.common.request_context import REQUEST_ID_MAX_LENGTH
from apps.jobs.registry import MODELS, ModelSpec
from apps.jobs.snapshots import snapshots_forget, snapshots_marked

# Each submission writes every index of the job table, so it has none that another index or
# none at all serves (docs/benchmarks.md, the seventh round).
_NON_NULL_INDEXES = ("depends_on", "cached_from", "outputs_of")


# What a job's API body shows (apps.jobs.apis.job_body): the hot reads select these columns
# only, through hand-written SQL (apps.common.sql) rather than a queryset compiled per request,
# and a write to any of them (or to who may see the job) forgets its snapshot (apps.jobs.
# snapshots).
JOB_BODY_FIELDS = (
    "id",
    "name",
    "model",
    "status",
    "stage",
    "progress",
    "cost_credits",
    "credits_refunded",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "error",
    "output_file",
    "depends_on_id",
    "sequence",
    "params",
    "run_seconds",
    "batch_size",
    "cached",
    "cached_from_id",
    "webhook_url",
    "webhook_events",
)

# What decides a job's answer, by column (attname): JOB_BODY_FIELDS and who may see it.
_SHOWN = frozenset({*JOB_BODY_FIELDS, "deleted_at", "account_id"})


def _shown(names: Iterable[str]) -> bool:
    """Whether an update of `names` (attnames, or a relation's name: `cached_from=`) may
    change a job's answer."""
    return any(name in _SHOWN or f"{name}_id" in _SHOWN for name in names)


class JobQuerySet(models.QuerySet["Job"]):
    """Every write through the ORM forgets the snapshots (apps.jobs.snapshots) of the jobs it
    may change, once it commits: an update of a shown column, and a delete, which also sets
    the references of other jobs to it to null."""

    def _written_ids(self) -> list[Any]:
        """The ids a write may touch: read from the filter where it names them (`id=`,
        `id__in=` with values, as every write in apps.jobs.services does), else queried."""
        where = self.query.where
        if where.connector == AND and not where.negated:
            for lookup in where.children:
                target = getattr(getattr(lookup, "lhs", None), "target", None)
                if not isinstance(lookup, Lookup) or target is None or not target.primary_key:
                    continue
                if isinstance(lookup, Exact) and not hasattr(lookup.rhs, "resolve_expression"):
                    return [lookup.rhs]
                if isinstance(lookup, In) and isinstance(lookup.rhs, (list, tuple, set)):
                    return list(lookup.rhs)
        return list(self.values_list("pk", flat=True))

    def update(self, **kwargs: Any) -> int:
        if not _shown(kwargs) or not snapshots_marked():
            return super().update(**kwargs)
        ids = self._written_ids()
        changed = super().update(**kwargs)
        snapshots_forget(ids, using=self.db)
        return changed

    def delete(self) -> tuple[int, dict[str, int]]:
        if not snapshots_marked():
            return super().delete()
        ids = self._written_ids()
        referring = Job.objects.filter(
            Q(depends_on__in=ids) | Q(cached_from__in=ids) | Q(outputs_of__in=ids)
        ).values_list("pk", flat=True)
        forgotten = [*ids, *referring] if ids else []
        deleted = super().delete()
        snapshots_forget(forgotten, using=self.db)
        return deleted


class Job(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.PENDING, Status.RUNNING)
    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by the (account, created_at) and (account, status) indexes below, which lead with
    # it: an index of its own would be one more for every submission to write.
    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="jobs", db_index=False
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs"
    )
    name = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=32)
    sequence = models.TextField()
    params = models.JSONField(default=dict)
    # A pipeline's dock waits for its fold: published only once that job completed.
    depends_on = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="dependents",
        db_index=False,  # _NON_NULL_INDEXES
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Worker progress: waiting_for_dependency, queued, loading_model, msa, inference, writing_outputs, done.
    stage = models.CharField(max_length=32, default="queued")
    progress = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    cost_credits = models.PositiveIntegerField()
    credits_refunded = models.PositiveIntegerField(default=0)
    output_file = models.CharField(max_length=255, blank=True)
    result_summary = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # The X-Request-ID of the submission: the worker's log lines and the webhooks carry it too.
    request_id = models.CharField(max_length=REQUEST_ID_MAX_LENGTH, blank=True, default="")
    # The per-request webhook (`webhook_url` on the submission) and the events it asked for;
    # its deliveries are signed with the account's webhook secret.
    webhook_url = models.CharField(max_length=2048, blank=True, default="")
    webhook_events = models.JSONField(default=list, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # Written by the worker every few seconds while it runs the job; a stale heartbeat means
    # the worker died and the sweeper hands the job to another one.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Shown as `metrics`: the model's wall time on the job's last attempt (a batched job's
    # forward pass is shared: its time counts in full for every job in it), and how many jobs
    # shared that forward pass. Null until the model returned.
    run_seconds = models.FloatField(null=True, blank=True)
    batch_size = models.PositiveSmallIntegerField(null=True, blank=True)
    # Deleted jobs vanish from the API but keep the row, so usage and the ledger stay whole.
    deleted_at = models.DateTimeField(null=True, blank=True)
    # What the job computes, canonically (apps.jobs.job_keys): identical keys, identical results.
    job_key = models.CharField(max_length=64, blank=True, default="")
    # Served without a run of its own: an earlier result reused, or another job's run ridden.
    cached = models.BooleanField(default=False)
    cached_from = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="cache_followers",
        db_index=False,  # _NON_NULL_INDEXES
    )
    # The job whose storage prefix holds this job's outputs (shared by reference); null: its own.
    outputs_of = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="output_sharers",
        db_index=False,  # _NON_NULL_INDEXES
    )
    # The weights the worker actually used (its runner's report), next to the declared identity
    # that went into job_key.
    weights = models.CharField(max_length=500, blank=True, default="")

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["account", "-created_at"]),
            models.Index(fields=["account", "status"]),
            # The sweeper's and the queue count's (pending jobs). Not on `enqueued_at`, which
            # a submission's publish writes right after the insert: with no indexed column
            # changed, PostgreSQL updates the row in place (HOT) instead of adding an entry to
            # every index of the table (the table keeps room in its pages for it, migration
            # jobs 0003).
            models.Index(fields=["status", "created_at"], name="job_status_created"),
            # A submission's two lookups by key (apps.jobs.services._key_matches_find), each read
            # in one step however many jobs share the key: every cache hit and every job riding
            # on a run is one more job with it, and the key index alone made both lookups walk
            # them all (the newest stored result, and the one leader in flight among followers).
            models.Index(
                F("job_key"),
                F("finished_at").desc(),
                condition=Q(status="completed", deleted_at__isnull=True) & ~Q(output_file=""),
                name="job_key_stored_result",
            ),
            models.Index(
                fields=["job_key", "created_at"],
                condition=Q(
                    status__in=["pending", "running"],
                    cached_from__isnull=True,
                    deleted_at__isnull=True,
                ),
                name="job_key_leader",
            ),
            *(
                # Read by `= id` only (followers, sharers, dependents, and SET_NULL on delete),
                # and null on most jobs: a partial index is not written for those.
                models.Index(
                    fields=[name], condition=Q(**{f"{name}__isnull": False}), name=f"job_{name}"
                )
                for name in _NON_NULL_INDEXES
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.id} ({self.status})"

    # A row written or deleted through the instance (the admin) forgets its snapshot too.
    def save(self, *args: Any, **kwargs: Any) -> None:
        existed = not self._state.adding
        super().save(*args, **kwargs)
        if existed:
            snapshots_forget([self.pk], using=self._state.db or "default")

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        return Job.objects.using(self._state.db or "default").filter(pk=self.pk).delete()

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def spec(self) -> ModelSpec | None:
        """The model's registry entry (None for a model since retired)."""
        return MODELS.get(self.model)

    @property
    def download_path(self) -> str:
        return f"/v1/jobs/{self.id}/download"


class JobEvent(models.Model):
    """One change of a job's status or stage, in order: what the event stream replays."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    status = models.CharField(max_length=16)
    stage = models.CharField(max_length=32)
    progress = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class IdempotencyRecord(models.Model):
    """The first successful response to a request sent with an Idempotency-Key header."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "key"], name="idempotency_key_per_account")
        ]
