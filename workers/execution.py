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

from apps.common.exceptions import InvalidInput
from apps.jobs.catalog import MODELS
from apps.jobs.models import Job
from apps.jobs.selectors import protein_job_get
from apps.jobs.services import (
    job_complete,
    job_fail,
    job_heartbeat,
    job_output_prefix,
    job_progress,
    job_start,
)
from apps.jobs.storage import get_storage
from workers.runners import MODEL_IDS, JobInputs, Runner, RunnerError, get_runner

logger = logging.getLogger(__name__)

_resident_runners: dict[str, Runner] = {}
_runner_lock = threading.Lock()


class JobNoLongerRunning(Exception):
    """Raised from the progress callback when the job was cancelled under the worker."""


def runner_options(model_id: str) -> dict:
    if model_id == "esmfold":
        return {
            "weights": settings.PHONOS_ESMFOLD_WEIGHTS,
            "device": settings.PHONOS_DEVICE or None,
            "local_files_only": not settings.PHONOS_MODEL_DOWNLOADS,
        }
    if model_id == "alphafold2":
        return {
            "data_dir": settings.PHONOS_COLABFOLD_DATA_DIR,
            "msa_server_url": settings.PHONOS_MSA_SERVER_URL,
            "msa_cache_dir": settings.PHONOS_MSA_CACHE_DIR,
        }
    if model_id == "vina":
        # Vina's length limit applies to the receptor cropped to the box, known only here.
        return {"max_residues": settings.PHONOS_MAX_LENGTH["vina"]}
    if model_id == "diffdock":
        return {
            "diffdock_dir": settings.PHONOS_DIFFDOCK_DIR,
            "python": settings.PHONOS_DIFFDOCK_PYTHON,
            "device": settings.PHONOS_DEVICE or None,
        }
    return {}


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
        with get_storage().open(job_output_prefix(job=source) + source.output_file) as stream:
            params["protein_pdb"] = stream.read().decode()
    except InvalidInput as error:
        raise RunnerError(error.message) from None
    except FileNotFoundError:
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

    def progress(stage: str, fraction: float | None) -> None:
        if not job_progress(job_id=job.id, stage=stage, progress=fraction):
            raise JobNoLongerRunning(str(job.id))

    heartbeat = _Heartbeat(str(job.id))
    heartbeat.start()
    try:
        with tempfile.TemporaryDirectory(prefix=f"phonos-{job.id}-") as workdir:
            runner = resident_runner(job.model)
            result = runner.run(
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
            return Job.Status.COMPLETED
        logger.info("Job %s finished after it was cancelled; its outputs are dropped", job.id)
        get_storage().delete_prefix(job_output_prefix(job=job))
    except JobNoLongerRunning:
        logger.info("Job %s was cancelled while running", job.id)
    except RunnerError as error:
        job_fail(job_id=job.id, error=error.message)
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
    return Job.objects.values_list("status", flat=True).get(id=job.id)


def _store_outputs(*, job: Job, files: list, primary: str) -> str:
    """Upload every file under the job's prefix; the primary file is named after the job."""
    storage = get_storage()
    prefix = job_output_prefix(job=job)
    primary_name = f"{job.id}{Path(primary).suffix}"
    for item in files:
        name = primary_name if item.name == primary else item.name
        storage.put_file(prefix + name, item.path, item.content_type)
    return primary_name
