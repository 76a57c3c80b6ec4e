"""Run one job inside a worker process: claim it, run its model, store outputs, finish it.

The model runner for each model is built once per process and stays resident. Every step is
safe to repeat: a job re-delivered after a worker died is claimed again by compare-and-set,
writes the same storage keys, and is charged nothing more (the debit happened at submit).
"""

import logging
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from apps.common.exceptions import InvalidInput, NotFound
from apps.common.request_context import log_context_bind, log_context_reset
from apps.jobs.models import Job
from apps.jobs.registry import MODELS
from apps.jobs.selectors import job_output_prefix, job_output_read, protein_job_get
from apps.jobs.services import (
    job_complete,
    job_fail,
    job_heartbeat,
    job_progress,
    job_start,
)
from apps.jobs.storage import get_storage
from workers.batching import model_run
from workers.presence import model_state_set
from workers.runners import MODEL_IDS, JobInputs, Runner, RunnerError, get_runner
from workers.runners.scrub import server_paths_scrub

logger = logging.getLogger(__name__)

_resident_runners: dict[str, Runner] = {}
_runner_lock = threading.Lock()
# Models this process has reported ready; a resident model stays loaded for good.
_ready_models: set[str] = set()


class JobNoLongerRunning(Exception):
    """Raised from the progress callback when the job was cancelled under the worker."""


def runner_options(model_id: str) -> dict:
    """The runner's constructor options, as its registry entry reads them from settings."""
    return MODELS[model_id].runner_options(settings)


def job_runner_params(*, job: Job) -> dict:
    """The params the runner gets: a docking job's `protein_job_id` becomes that job's PDB text,
    read from storage now, checked again in case it was deleted since submission."""
    params = dict(job.params)
    protein_job_id = params.pop("protein_job_id", None)
    if protein_job_id is None:
        return params
    try:
        source = protein_job_get(
            account_id=job.account_id,
            job_id=protein_job_id,
            max_residues=MODELS[job.model].max_length,
        )
        params["protein_pdb"] = job_output_read(job=source, name=source.output_file).decode()
    except InvalidInput as error:
        raise RunnerError(error.message) from None
    except NotFound:
        raise RunnerError(
            f"params.protein_job_id: the structure of job {protein_job_id} is no longer stored"
        ) from None
    return params


def models_for_queues(queues: Iterable[str]) -> list[str]:
    """The models this worker serves, from the queues it consumes."""
    consumed = set(queues)
    return [spec.id for spec in MODELS.values() if spec.queue in consumed and spec.id in MODEL_IDS]


def resident_runner(model_id: str) -> Runner:
    with _runner_lock:
        if model_id not in _resident_runners:
            _resident_runners[model_id] = get_runner(model_id, **runner_options(model_id))
        return _resident_runners[model_id]


def model_load(model_id: str) -> Runner:
    """Load `model_id` in this process (once) and report it in the worker's presence: ready with
    its device, memory and weights, or not ready with the reason, which is also logged. Raises
    RunnerError when the model cannot be served."""
    try:
        runner = resident_runner(model_id)
        runner.load()
    except Exception as error:
        message = error.message if isinstance(error, RunnerError) else repr(error)
        model_state_set(model_id, ready=False, error=message)
        logger.error("This worker cannot serve %s: %s", model_id, message)
        if isinstance(error, RunnerError):
            raise
        raise RunnerError(f"the {model_id} worker could not load its model") from error
    if model_id not in _ready_models:
        describe = getattr(runner, "resident_info", None)
        info = describe() if describe is not None else {}
        model_state_set(model_id, ready=True, **info)
        _ready_models.add(model_id)
        logger.info("Model %s is ready: %s", model_id, info)
    return runner


class _Heartbeat(threading.Thread):
    """Tells the sweeper this worker is alive while a long forward pass holds the job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id = job_id
        self.stopped = threading.Event()

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.stopped.wait(settings.PHONOS_HEARTBEAT_SECONDS):
                if not job_heartbeat(job_id=self.job_id):
                    return
        finally:
            connection.close()


def job_execute(*, job_id: str) -> str:
    """Returns the job's status when the worker is done with it."""
    job = job_start(job_id=job_id)
    if job is None:
        current = Job.objects.filter(id=job_id).values_list("status", flat=True).first()
        logger.info("Job %s not claimed (status %s); nothing to do", job_id, current)
        return current or "missing"

    # Every line logged while this job runs names it and the request that submitted it.
    log_token = log_context_bind(request_id=job.request_id, job_id=str(job.id))
    logger.info(
        "Job %s started: %s, attempt %s",
        job.id,
        job.model,
        job.attempts,
        extra={"model": job.model, "attempt": job.attempts},
    )

    def progress(stage: str, fraction: float | None) -> None:
        if not job_progress(job_id=job.id, stage=stage, progress=fraction):
            raise JobNoLongerRunning(str(job.id))

    heartbeat = _Heartbeat(str(job.id))
    heartbeat.start()
    try:
        with tempfile.TemporaryDirectory(prefix=f"phonos-{job.id}-") as workdir:
            # A model this worker could not load fails its job now, refunded, instead of
            # first spending minutes on an MSA search or waiting on a missing checkout.
            runner = model_load(job.model)
            result = model_run(
                runner,
                job_id=job.id,
                inputs=JobInputs(
                    sequence=job.sequence,
                    name=job.name or str(job.id),
                    params=job_runner_params(job=job),
                ),
                workdir=Path(workdir),
                progress=progress,
            )
            progress("writing_outputs", None)
            output_file = _store_outputs(job=job, files=result.files, primary=result.primary_file)
        metadata = {
            **result.metadata,
            "files": sorted(
                output_file if item.name == result.primary_file else item.name
                for item in result.files
            ),
        }
        if job_complete(
            job_id=job.id, output_file=output_file, summary=result.summary, metadata=metadata
        ):
            logger.info("Job %s completed", job.id, extra={"model": job.model})
            return Job.Status.COMPLETED
        logger.info("Job %s finished after it was cancelled; its outputs are dropped", job.id)
        get_storage().delete_prefix(job_output_prefix(job=job))
    except JobNoLongerRunning:
        logger.info("Job %s was cancelled while running", job.id)
    except RunnerError as error:
        # Runner messages quote worker files (tmp dirs, checkouts); tenants read this one.
        job_fail(job_id=job.id, error=server_paths_scrub(error.message))
    except Exception as error:
        from celery.exceptions import SoftTimeLimitExceeded

        if isinstance(error, SoftTimeLimitExceeded):
            limit = settings.PHONOS_TIME_LIMITS[job.model]
            job_fail(
                job_id=job.id, error=f"The job exceeded the {job.model} time limit of {limit} s"
            )
        else:
            logger.exception("Job %s failed unexpectedly", job.id)
            job_fail(
                job_id=job.id,
                error=f"The {job.model} worker hit an internal error ({type(error).__name__}); "
                "the job was refunded",
            )
    finally:
        heartbeat.stopped.set()
        log_context_reset(log_token)
    # An account deleted while its job ran takes the job row with it.
    return Job.objects.values_list("status", flat=True).filter(id=job.id).first() or "missing"


def _store_outputs(*, job: Job, files: list, primary: str) -> str:
    """Upload every file under the job's prefix; the primary file is named after the job."""
    storage = get_storage()
    prefix = job_output_prefix(job=job)
    primary_name = f"{job.id}{Path(primary).suffix}"
    for item in files:
        name = primary_name if item.name == primary else item.name
        storage.put_file(prefix + name, item.path, item.content_type)
    return primary_name
