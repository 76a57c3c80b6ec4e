import uuid

from django.db import models
from django.db.models import F, Q

from apps.common.request_context import REQUEST_ID_MAX_LENGTH
from apps.jobs.registry import MODELS, ModelSpec

# Each submission writes every index of the job table, so it has none that another index or
# none at all serves (docs/benchmarks.md, the seventh round).
_NON_NULL_INDEXES = ("depends_on", "cached_from", "outputs_of")


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
