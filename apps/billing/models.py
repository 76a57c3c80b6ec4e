import uuid

from django.db import models


class LedgerEntry(models.Model):
    """One immutable change of an account's credit balance. Rows are only ever inserted."""

    class Kind(models.TextChoices):
        GRANT = "grant"
        PURCHASE = "purchase"
        JOB_DEBIT = "job_debit"
        REFUND = "refund"
        ADJUSTMENT = "adjustment"

    account = models.ForeignKey(
        "accounts.Account", on_delete=models.PROTECT, related_name="ledger_entries"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    amount = models.BigIntegerField(help_text="Signed: positive adds credits, negative spends")
    balance_after = models.BigIntegerField()
    # A plain id, not a foreign key: the ledger outlives deleted jobs. Read only with the kind
    # (a job's debit, its refund), which the two partial unique indexes below serve: an index
    # of its own would be one more for every submission to write.
    job_id = models.UUIDField(null=True, blank=True)
    reference = models.CharField(max_length=255, blank=True)
    description = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)  # the ledger is read by account and id

    class Meta:
        ordering = ["-id"]
        constraints = [
            # The database itself guarantees a job is charged once and refunded at most once.
            models.UniqueConstraint(
                fields=["job_id"],
                condition=models.Q(kind="job_debit"),
                name="ledger_one_debit_per_job",
            ),
            models.UniqueConstraint(
                fields=["job_id"],
                condition=models.Q(kind="refund"),
                name="ledger_one_refund_per_job",
            ),
            models.UniqueConstraint(
                fields=["reference"],
                condition=models.Q(kind="purchase"),
                name="ledger_one_purchase_per_reference",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} → {self.balance_after}"


class CheckoutSession(models.Model):
    """A Stripe Checkout Session we opened: what was sold, for how much, and to whom.

    The webhook grants the credits recorded here, never credits read from the event.
    """

    class Status(models.TextChoices):
        CREATING = "creating"  # row written, Stripe not yet answered
        OPEN = "open"  # the buyer can pay at `url`
        AWAITING_PAYMENT = "awaiting_payment"  # checkout finished, a delayed payment is pending
        COMPLETED = "completed"  # paid and credited
        EXPIRED = "expired"
        FAILED = "failed"  # Stripe refused to open it, or the delayed payment failed

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        "accounts.Account", on_delete=models.PROTECT, related_name="checkout_sessions"
    )
    stripe_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    url = models.TextField(blank=True)
    pack_id = models.CharField(max_length=32)
    credits = models.PositiveBigIntegerField()
    amount_cents = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CREATING)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.pack_id} for account {self.account_id} ({self.status})"


class StripeEvent(models.Model):
    """A Stripe event already handled; the primary key makes a redelivery a no-op."""

    id = models.CharField(max_length=255, primary_key=True)
    type = models.CharField(max_length=100)
    # What handling it did (`granted`, `ignored`, `unknown_session`, ...), for operators.
    outcome = models.CharField(max_length=40)
    processed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.id} {self.type} ({self.outcome})"
