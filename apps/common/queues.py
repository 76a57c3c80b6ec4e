import logging
from enum import StrEnum
from typing import Any

logger = logging.getLogger(__name__)

# One quick retry: a broker that is down must not hold a request or an on-commit hook for long.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}


class Queue(StrEnum):
    """Celery queues that are not a model's own (models name theirs in apps.jobs.registry)."""

    # Short, I/O-bound work on CPU nodes: webhook deliveries, sweepers.
    LIGHT = "light"


def task_publish(name: str, *, args: list[str], queue: str, what: str, **options: Any) -> bool:
    """Publish a task. A broker that is down is logged, not raised, and answers False: each
    caller's sweeper publishes again whatever never arrived. `what` names it in the log."""
    from phonos.celery import app as celery_app

    try:
        celery_app.send_task(
            name, args=args, queue=queue, retry=True, retry_policy=PUBLISH_RETRY_POLICY, **options
        )
    except Exception:
        logger.warning("Could not enqueue %s; the sweeper will retry", what, exc_info=True)
        return False
    return True
