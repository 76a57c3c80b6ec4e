import os
from typing import Any

from celery import Celery, Task
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "phonos.settings")

app = Celery("phonos", include=["workers.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def tune_embedded_broker(sender: Celery, **_: Any) -> None:
    if (sender.conf.broker_url or "").startswith("sqla+"):
        # The embedded default's SQLite broker polls. The class attribute is the knob that works
        # (a transport option crashes); its 1 s default would add a second to every job.
        from kombu.transport.sqlalchemy import Transport

        Transport.polling_interval = 0.1


# --- Logs: Django's LOGGING in workers too, and the request id carried with each task --------
REQUEST_ID_TASK_HEADER = "phonos_request_id"


@setup_logging.connect
def use_django_logging(**_: Any) -> None:
    """Workers log through `LOGGING` (JSON lines in production) instead of Celery's own
    format; Celery leaves logging alone when this signal has a receiver."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@before_task_publish.connect
def carry_request_id(headers: dict[str, Any], **_: Any) -> None:
    """A task published while handling a request (or a job) carries that request's id."""
    from apps.common.request_context import request_id_current

    request_id = request_id_current()
    if request_id:
        headers.setdefault(REQUEST_ID_TASK_HEADER, request_id)


@task_prerun.connect
def bind_request_id(task: Task[Any, Any], **_: Any) -> None:
    from apps.common.request_context import log_context_replace, request_id_clean

    raw = task.request.get(REQUEST_ID_TASK_HEADER)
    log_context_replace({"request_id": request_id_clean(raw)} if raw else {})


@task_postrun.connect
def unbind_request_id(**_: Any) -> None:
    from apps.common.request_context import log_context_replace

    log_context_replace({})
