from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Lower


class Account(models.Model):
    """A tenant: owns its users, API keys, jobs, ledger, usage and webhooks."""

    username = models.CharField(max_length=150, unique=True)
    email = models.EmailField()
    # Cached sum of the ledger; changed only with a ledger entry in the same transaction.
    credit_balance = models.BigIntegerField(default=0)
    max_active_jobs = models.PositiveIntegerField(null=True, blank=True)
    # Set once, when the owner follows the signed link mailed to `email` (or by an operator).
    email_verified_at = models.DateTimeField(null=True, blank=True)
    # The trial credits (PHONOS_SIGNUP_CREDITS) are granted when this changes from empty, once.
    trial_credits_granted_at = models.DateTimeField(null=True, blank=True)
    # The most requests per minute any one key of this account may have; empty: the setting.
    max_key_rate_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests per minute allowed per API key. Empty: PHONOS_MAX_KEY_RATE_LIMIT.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(credit_balance__gte=0), name="account_balance_non_negative"
            ),
            # Unique among verified accounts only: an unverified sign-up cannot squat on someone
            # else's address, and only the mailbox's owner can verify (docs/dashboard.md).
            models.UniqueConstraint(
                Lower("email"),
                condition=models.Q(email_verified_at__isnull=False),
                name="account_verified_email_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.username

    @property
    def active_job_limit(self) -> int:
        return self.max_active_jobs or settings.PHONOS_MAX_ACTIVE_JOBS_PER_ACCOUNT

    @property
    def key_rate_limit_max(self) -> int:
        return self.max_key_rate_limit or settings.PHONOS_MAX_KEY_RATE_LIMIT

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None


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
    # Not a column: set on the instances apps.accounts.key_cache builds, to the credentials
    # version they were read at (an annotation alone adds nothing to the model).
    cached_version: int | None

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
