"""Celery tasks. They orchestrate; the work lives in workers.execution and apps.jobs.services.

Model tasks are routed at publish time to the model's own queue (`esmfold`, `alphafold2`,
`diffdock`); housekeeping runs on `light`. Tasks take ids, never model instances.
"""

import logging
import threading
from typing import Any

from celery import shared_task
from celery.signals import (
    celeryd_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

# Imported with the tasks so that it counts this process's job tasks from the first one.
import workers.batching  # noqa: F401
from apps.jobs.services import job_sweep

logger = logging.getLogger(__name__)


@celeryd_init.connect
def remember_worker_name(sender: str, **_: Any) -> None:
    from workers.presence import worker_identity_set

    worker_identity_set(hostname=sender)


@worker_process_init.connect
def preload_models(**_: Any) -> None:
    """Start loading the models of the queues this worker consumes as each process starts, so
    the first job does not pay for it, and start the presence heartbeat that tells the API which
    of them are ready. Loading happens in a thread: Celery kills a pool process that does not
    report itself up within seconds, and a real model takes minutes to load. A job that arrives
    meanwhile waits for the load; a model that cannot load is reported not ready, with why."""
    from phonos.celery import app
    from workers.execution import models_for_queues
    from workers.presence import presence_start

    queues = list(app.amqp.queues.consume_from or {})
    models = models_for_queues(queues)
    presence_start(queues=queues, models=models)
    if models:
        threading.Thread(target=_load_models, args=(models,), daemon=True).start()


@worker_ready.connect
def preload_models_in_this_process(sender: object, **_: Any) -> None:
    """The threads and solo pools (ESMFold micro-batching runs on threads) run tasks in the
    worker's own process, where `worker_process_init` never fires."""
    pool = getattr(sender, "pool", None)
    if pool is not None and "prefork" not in type(pool).__module__:
        preload_models()


@worker_process_shutdown.connect
@worker_shutdown.connect
def withdraw_presence(**_: Any) -> None:
    """A prefork pool process withdraws its own presence; in the threads and solo pools the
    worker's own process holds it (in a prefork main process there is none to withdraw)."""
    from workers.presence import presence_stop

    presence_stop()


def _load_models(models: list[str]) -> None:
    from workers.execution import model_load
    from workers.runners import RunnerError

    for model_id in models:
        try:
            model_load(model_id)
        except RunnerError:
            pass  # model_load logged why and reported the model not ready


@shared_task(name="workers.tasks.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    from workers.execution import job_execute

    return job_execute(job_id=job_id)


@shared_task(name="workers.tasks.sweep_jobs", acks_late=True)
def sweep_jobs() -> dict[str, list[str]]:
    report = job_sweep()
    return {"republished": report.republished, "failed": report.failed}
