import uuid

from django.db import models

from apps.common.request_context import REQUEST_ID_MAX_LENGTH


class Webhook(models.Model):
    """An account's endpoint for job events. The signing secret is kept encrypted, never hashed:
    it must be readable to sign each delivery."""

    class Event(models.TextChoices):
        JOB_STARTED = "job.started"
        JOB_COMPLETED = "job.completed"
        JOB_FAILED = "job.failed"
        JOB_CANCELLED = "job.cancelled"

    # Sent by `POST /v1/webhooks/{id}/test`, whatever the webhook subscribes to.
    TEST_EVENT = "webhook.test"
    DEFAULT_EVENTS = (Event.JOB_COMPLETED, Event.JOB_FAILED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="webhooks"
    )
    url = models.CharField(max_length=2048)
    events = models.JSONField(default=list)
    # Fernet tokens (apps.webhooks.signing). The previous secret keeps signing, next to the new
    # one, for a grace period after a rotation so receivers can switch without dropping events.
    secret_encrypted = models.TextField()
    secret_hint = models.CharField(max_length=16)
    previous_secret_encrypted = models.TextField(blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # Health: when deliveries started failing (cleared by any success), and when the endpoint was
    # disabled for failing too long. A successful test or manual retry enables it again.
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["account", "created_at"])]

    def __str__(self) -> str:
        return f"{self.url} ({self.account_id})"

    @property
    def is_enabled(self) -> bool:
        return self.disabled_at is None


class AccountWebhookSecret(models.Model):
    """The account's signing secret for per-request webhooks (`webhook_url` on a submission):
    one per account, created on first use, and shown only by `POST /v1/webhooks/account-secret`,
    which creates or rotates it. Kept encrypted like an endpoint's secret."""

    account = models.OneToOneField(
        "accounts.Account",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="webhook_secret",
    )
    secret_encrypted = models.TextField()
    secret_hint = models.CharField(max_length=16)
    previous_secret_encrypted = models.TextField(blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"webhook secret of {self.account_id}"


class WebhookDelivery(models.Model):
    """One event for one destination: the outbox row, written in the transaction of the change
    it announces. Its id is the `webhook-id` header, the same on every attempt.

    The destination is either an account's webhook (`webhook`) or the `webhook_url` given with
    the job's submission (`url`, signed with the account's secret), never both."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    webhook = models.ForeignKey(
        Webhook, on_delete=models.CASCADE, null=True, blank=True, related_name="deliveries"
    )
    # A per-request delivery's destination, checked when the job was submitted and again at
    # every attempt; empty for a webhook's delivery.
    url = models.CharField(max_length=2048, blank=True, default="")
    # The job announced, for a per-request delivery (no foreign key: jobs sits above webhooks).
    job_id = models.UUIDField(null=True, blank=True)
    event = models.CharField(max_length=32)
    # The exact body, so that every attempt sends (and signs) the same bytes.
    payload = models.TextField()
    # The request id of the job (or test request) it announces, sent as X-Request-ID.
    request_id = models.CharField(max_length=REQUEST_ID_MAX_LENGTH, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField()
    # When the next attempt is due; null once the delivery succeeded or failed for good.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The claim of the attempt in progress; a worker that dies leaves it to expire.
    locked_until = models.DateTimeField(null=True, blank=True)
    # When the sweeper last published this delivery again (it does so at most every few minutes).
    swept_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["webhook", "-created_at"]),
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["account", "job_id", "-created_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(webhook__isnull=False, url="")
                    | (models.Q(webhook__isnull=True) & ~models.Q(url=""))
                ),
                name="webhook_delivery_one_destination",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook_id or self.url} ({self.status})"

    @property
    def destination_url(self) -> str:
        return self.webhook.url if self.webhook is not None else self.url


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery, as the deliveries endpoint shows it."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    attempted_at = models.DateTimeField()
    succeeded = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    # The start of the receiver's answer, for debugging (the read is bounded).
    response_body = models.TextField(blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_number")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
