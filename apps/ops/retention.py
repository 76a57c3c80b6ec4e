"""Retention: the tables that grow with traffic are pruned, a bounded batch per statement.

What goes, and when (docs/operations.md):
- `IdempotencyRecord` after PHONOS_IDEMPOTENCY_TTL_HOURS (24 h): past it a key is no longer
  honoured anyway (apps.jobs.idempotency).
- `JobEvent` of terminal jobs after PHONOS_RETENTION_JOB_EVENTS_DAYS; the events of running
  and pending jobs stay whatever their age, since their streams replay them.
- Finished webhook deliveries, with their attempts, after PHONOS_WEBHOOK_DELIVERY_RETENTION_DAYS
  (apps.webhooks.services.webhook_deliveries_prune); pending ones are never dropped.
- `UsageCounter` rows of days older than PHONOS_RETENTION_USAGE_DAYS (at least 90: `/v1/usage`
  answers at most 90 days, and `by_model` is counted from jobs, not from these rows), and the
  `UsageFold` records of folds over a day old (the next fold deletes a folded claim at once).

Each batch is its own short statement, so pruning a large backlog never holds long locks; the
beat task and `phonos_prune` run the same function and may run at the same time harmlessly.
"""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from apps.jobs.models import IdempotencyRecord, Job, JobEvent
from apps.usage.models import UsageCounter, UsageFold
from apps.webhooks.services import webhook_deliveries_prune


@dataclass(frozen=True)
class PruneReport:
    idempotency_records: int
    job_events: int
    webhook_deliveries: int
    usage_records: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _delete_in_batches(queryset: QuerySet, *, batch_size: int) -> int:
    label = queryset.model._meta.label
    total = 0
    while True:
        ids = list(queryset.order_by().values_list("pk", flat=True)[:batch_size])
        if not ids:
            return total
        _count, per_model = queryset.model.objects.filter(pk__in=ids).delete()
        total += per_model.get(label, 0)


def retention_prune(*, now: datetime | None = None, batch_size: int | None = None) -> PruneReport:
    now = now or timezone.now()
    batch_size = batch_size or settings.PHONOS_RETENTION_BATCH_SIZE
    idempotency = IdempotencyRecord.objects.filter(
        created_at__lt=now - timedelta(hours=settings.PHONOS_IDEMPOTENCY_TTL_HOURS)
    )
    events = JobEvent.objects.filter(
        job__status__in=Job.TERMINAL,
        created_at__lt=now - timedelta(days=settings.PHONOS_RETENTION_JOB_EVENTS_DAYS),
    )
    usage = UsageCounter.objects.filter(
        date__lt=(now - timedelta(days=settings.PHONOS_RETENTION_USAGE_DAYS)).date()
    )
    folds = UsageFold.objects.filter(folded_at__lt=now - timedelta(days=1))
    deliveries = 0
    while pruned := webhook_deliveries_prune():
        deliveries += pruned
    return PruneReport(
        idempotency_records=_delete_in_batches(idempotency, batch_size=batch_size),
        job_events=_delete_in_batches(events, batch_size=batch_size),
        webhook_deliveries=deliveries,
        usage_records=_delete_in_batches(usage, batch_size=batch_size)
        + _delete_in_batches(folds, batch_size=batch_size),
    )
