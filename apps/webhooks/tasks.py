"""Webhook tasks, on the `light` queue. They orchestrate; the work lives in services. Each is
idempotent: a delivery task that runs twice, or late, sends nothing it should not."""

from celery import shared_task

from apps.webhooks import services


@shared_task(name=services.DELIVERY_TASK, acks_late=True, ignore_result=True)
def webhook_delivery_attempt(delivery_id: str) -> None:
    services.webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(name="apps.webhooks.tasks.webhook_deliveries_sweep", ignore_result=True)
def webhook_deliveries_sweep() -> dict[str, int]:
    return {
        "republished": services.webhook_deliveries_sweep(),
        "pruned": services.webhook_deliveries_prune(),
    }
