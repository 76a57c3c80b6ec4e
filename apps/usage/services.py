from apps.accounts.models import ApiKey
from apps.usage.models import UsageRecord


def usage_record(
    *,
    api_key: ApiKey,
    endpoint: str,
    method: str,
    status_code: int,
    latency_ms: float,
    credits: int,
    model: str,
) -> UsageRecord:
    return UsageRecord.objects.create(
        account_id=api_key.account_id,
        api_key=api_key,
        endpoint=endpoint,
        method=method,
        status_code=status_code,
        latency_ms=round(latency_ms, 3),
        credits=credits,
        model=model,
    )
