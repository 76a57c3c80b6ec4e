"""Celery tasks. They orchestrate; the work lives in workers.execution and apps.jobs.services.

Model tasks are routed at publish time to the model's own queue (`esmfold`, `alphafold2`,
`diffdock`); housekeeping runs on `light`. Tasks take ids, never model instances.
"""

import logging
import threading

from celery import shared_task
from celery.signals import worker_process_init

# Imported with the tasks so that it counts this process's job tasks from the first one.
import workers.batching  # noqa: F401
from apps.jobs.services import job_sweep

logger = logging.getLogger(__name__)


@worker_process_init.connect
def preload_models(**_) -> None:
    """Start loading the models of the queues this worker consumes as each process starts, so
    the first job does not pay for it. It happens in a thread: Celery kills a pool process that
    does not report itself up within seconds, and a real model takes minutes to load. A job
    that arrives meanwhile waits for the load; a model that cannot load is left for its jobs
    to report."""
    from phonos.celery import app
    from workers.execution import models_for_queues

    models = models_for_queues(app.amqp.queues.consume_from or {})
    if models:
        threading.Thread(target=_load_models, args=(models,), daemon=True).start()


def _load_models(models: list[str]) -> None:
    from workers.execution import resident_runner
    from workers.runners import RunnerError

    for model_id in models:
        try:
            resident_runner(model_id).load()
        except RunnerError as error:
            logger.warning("Could not preload %s: %s", model_id, error.message)


@shared_task(name="workers.tasks.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    from workers.execution import job_execute

    return job_execute(job_id=job_id)


@shared_task(name="workers.tasks.sweep_jobs", acks_late=True)
def sweep_jobs() -> dict:
    report = job_sweep()
    return {"republished": report.republished, "failed": report.failed}
