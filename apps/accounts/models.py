from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class Account(models.Model):
    """A tenant: owns its users, API keys, jobs, ledger, usage and webhooks."""

    username = models.CharField(max_length=150, unique=True)
    email = models.EmailField()
    # Cached sum of the ledger; changed only with a ledger entry in the same transaction.
    credit_balance = models.BigIntegerField(default=0)
    max_active_jobs = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(credit_balance__gte=0), name="account_balance_non_negative"
            )
        ]

    def __str__(self) -> str:
        return self.username

    @property
    def active_job_limit(self) -> int:
        return self.max_active_jobs or settings.PHONOS_MAX_ACTIVE_JOBS_PER_ACCOUNT


class User(AbstractUser):
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="users", null=True, blank=True
    )


class ApiKey(models.Model):
    """A bearer key. Only the SHA-256 digest is stored; the full key is shown once."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16)
    rate_limit_per_minute = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["account", "created_at"])]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @property
    def masked(self) -> str:
        return f"{self.prefix}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
