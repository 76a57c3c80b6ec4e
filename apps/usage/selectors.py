from datetime import timedelta
from typing import Any

from django.db.models import Count, Sum
from django.utils import timezone

from apps.accounts.models import Account
from apps.jobs.models import Job
from apps.usage.models import UsageCounter


def usage_summary(*, account: Account, days: int) -> dict[str, Any]:
    """Requests and credits over the last `days` days (from the whole UTC day `days` days ago:
    the counters are daily).

    Request counts, latency and credits per endpoint come from the usage counters; `by_model`
    counts jobs submitted per model, with the credits they cost net of refunds.
    """
    end = timezone.now()
    start = end - timedelta(days=days)
    counters = UsageCounter.objects.filter(account=account, date__gte=start.date())
    totals = counters.aggregate(
        requests=Sum("requests"), credits_used=Sum("credits"), latency=Sum("latency_ms_sum")
    )
    requests = totals["requests"] or 0
    by_endpoint = (
        counters.values("endpoint")
        .annotate(requests=Sum("requests"), credits_used=Sum("credits"))
        .order_by("-requests", "endpoint")
    )
    daily = (
        counters.values("date")
        .annotate(requests=Sum("requests"), credits_used=Sum("credits"))
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
            "requests": requests,
            "credits_used": totals["credits_used"] or 0,
            "credits_refunded": refunded,
            "avg_response_time_ms": round((totals["latency"] or 0.0) / requests, 1)
            if requests
            else 0.0,
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
