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
    # A plain id, not a foreign key: the ledger outlives deleted jobs.
    job_id = models.UUIDField(null=True, blank=True, db_index=True)
    reference = models.CharField(max_length=255, blank=True)
    description = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

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
