from apps.common.request_usage import RequestUsage
from apps.usage.models import UsageRecord


def usage_record(
    *, usage: RequestUsage, endpoint: str, method: str, status_code: int, latency_ms: float
) -> UsageRecord:
    """One authenticated request's record: `usage` carries what the request itself reported."""
    assert usage.account_id is not None  # callers record only requests that carry an account
    return UsageRecord.objects.create(
        account_id=usage.account_id,
        api_key_id=usage.api_key_id,
        endpoint=endpoint,
        method=method,
        status_code=status_code,
        latency_ms=round(latency_ms, 3),
        credits=usage.credits,
        model=usage.model,
    )
