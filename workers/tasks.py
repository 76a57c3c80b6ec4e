"""Celery tasks. They orchestrate; the work lives in workers.execution and apps.jobs.services.

Model tasks are routed at publish time to the model's own queue (`esmfold`, `alphafold2`,
`diffdock`); housekeeping runs on `light`. Tasks take ids, never model instances.
"""

from celery import shared_task

from apps.jobs.services import job_sweep


@shared_task(name="workers.tasks.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    from workers.execution import job_execute

    return job_execute(job_id=job_id)


@shared_task(name="workers.tasks.sweep_jobs", acks_late=True)
def sweep_jobs() -> dict:
    report = job_sweep()
    return {"republished": report.republished, "failed": report.failed}
