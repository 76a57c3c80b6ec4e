"""Job housekeeping tasks, on the `light` queue; the work lives in services."""

from celery import shared_task

from apps.ops.retention import retention_prune as prune


@shared_task(name="apps.ops.tasks.retention_prune", ignore_result=True)
def retention_prune() -> dict[str, int]:
    return prune().as_dict()
