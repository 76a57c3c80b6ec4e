from celery import shared_task

from apps.usage.services import usage_fold as fold


@shared_task(name="apps.usage.tasks.usage_fold", ignore_result=True)
def usage_fold() -> int:
    return fold()
