from apps.usage.models import UsageRecord


def usage_record(
    *,
    api_key_id: int,
    account_id: int,
    endpoint: str,
    method: str,
    status_code: int,
    latency_ms: float,
    credits: int,
    model: str,
) -> UsageRecord:
    return UsageRecord.objects.create(
        account_id=account_id,
        api_key_id=api_key_id,
        endpoint=endpoint,
        method=method,
        status_code=status_code,
        latency_ms=round(latency_ms, 3),
        credits=credits,
        model=model,
    )
