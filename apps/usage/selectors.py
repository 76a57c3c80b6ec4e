from datetime import timedelta
from typing import Any

from django.db.models import Avg, Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from apps.accounts.models import Account
from apps.jobs.models import Job
from apps.usage.models import UsageRecord


def usage_summary(*, account: Account, days: int) -> dict[str, Any]:
    """Requests and credits over the last `days` days.

    Request counts, latency and credits per endpoint come from the request log; `by_model`
    counts jobs submitted per model, with the credits they cost net of refunds.
    """
    end = timezone.now()
    start = end - timedelta(days=days)
    records = UsageRecord.objects.filter(account=account, created_at__gte=start)
    totals = records.aggregate(
        requests=Count("id"), credits_used=Sum("credits"), avg=Avg("latency_ms")
    )
    by_endpoint = (
        records.values("endpoint")
        .annotate(requests=Count("id"), credits_used=Sum("credits"))
        .order_by("-requests", "endpoint")
    )
    daily = (
        records.annotate(date=TruncDate("created_at"))
        .values("date")
        .annotate(requests=Count("id"), credits_used=Sum("credits"))
        .order_by("date")
    )
    jobs = Job.objects.filter(account=account, created_at__gte=start)
    by_model = (
        jobs.values("model")
        .annotate(
            requests=Count("id"), charged=Sum("cost_credits"), refunded=Sum("credits_refunded")
        )
        .order_by("-requests", "model")
    )
    refunded = jobs.aggregate(total=Sum("credits_refunded"))["total"] or 0
    return {
        "period": {
            "days": days,
            "start_date": start.date().isoformat(),
            "end_date": end.date().isoformat(),
        },
        "totals": {
            "requests": totals["requests"],
            "credits_used": totals["credits_used"] or 0,
            "credits_refunded": refunded,
            "avg_response_time_ms": round(totals["avg"] or 0.0, 1),
        },
        "by_endpoint": [
            {
                "endpoint": row["endpoint"],
                "requests": row["requests"],
                "credits_used": row["credits_used"] or 0,
            }
            for row in by_endpoint
        ],
        "by_model": [
            {
                "model": row["model"],
                "requests": row["requests"],
                "credits_used": (row["charged"] or 0) - (row["refunded"] or 0),
            }
            for row in by_model
        ],
        "daily": [
            {
                "date": row["date"].isoformat(),
                "requests": row["requests"],
                "credits_used": row["credits_used"] or 0,
            }
            for row in daily
        ],
    }
