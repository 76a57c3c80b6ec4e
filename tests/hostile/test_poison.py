"""A poison job: its run kills the worker process every time (here the kernel's SIGKILL at the
worker's CPU-time limit, as an OOM kill would). Celery hands it back after each death; after
PHONOS_JOB_MAX_ATTEMPTS the job fails, refunded once, and the queue moves on."""

import pytest
from django.conf import settings

from apps.billing.models import LedgerEntry
from apps.jobs.models import Job
from bench.processes import wait_until
from tests.conftest import ESMFOLD_JOB

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Each worker process may compute this many CPU seconds. Importing torch and transformers and
# running a small job take well under it; folding 400 residues through 25 trunk passes takes
# several times more, so the kernel SIGKILLs the pool process in the middle of it.
CPU_SECONDS = 15
POISON_JOB = {
    "model": "esmfold",
    "sequence": "MKTVRQERLKSIVRILERSKEPVSGAQLAEELSVSRQVIVQDIAYLRSLGYNIVATPRGYVLAGG" * 6,
    "name": "poison",
    "params": {"num_recycles": 24, "chunk_size": None},
}


def test_a_job_that_kills_its_worker_fails_after_max_attempts_and_the_queue_moves_on(
    make_client, supervised_worker, tiny_esmfold
):
    client = make_client(credits=100)
    worker = supervised_worker(
        name="poison",
        queues="esmfold",
        cpu_seconds=CPU_SECONDS,
        PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold),
    )
    worker.wait_for_log("ready.")
    poison = client.post("/v1/predict", POISON_JOB).json()
    following = client.post("/v1/predict", {**ESMFOLD_JOB, "name": "after the poison"}).json()
    cost = poison["credits_used"]

    attempts = settings.PHONOS_JOB_MAX_ATTEMPTS
    job = wait_until(
        lambda: Job.objects.filter(id=poison["job_id"], status__in=Job.TERMINAL).first(),
        lambda: f"the poison job to finish:\n{worker.log()[-5000:]}",
        timeout=240 * attempts,
        interval=0.3,
    )
    # A message handed back after a death goes behind the waiting ones: the next job may run
    # between two attempts of the poison one. Either way it completes.
    after = wait_until(
        lambda: Job.objects.filter(id=following["job_id"], status__in=Job.TERMINAL).first(),
        lambda: f"the job after the poison to finish:\n{worker.log()[-5000:]}",
        timeout=120,
        interval=0.3,
    )
    assert after.status == Job.Status.COMPLETED, after.error
    assert job.status == Job.Status.FAILED
    assert job.attempts == attempts
    assert f"stopped {attempts} times" in job.error
    assert job.credits_refunded == cost
    # Killed by the kernel each time, not failed by our code: the pool process died with SIGKILL.
    assert worker.log().count("exited with 'signal 9 (SIGKILL)'") == attempts
    refunds = LedgerEntry.objects.filter(job_id=job.id, kind=LedgerEntry.Kind.REFUND)
    assert [entry.amount for entry in refunds] == [cost]
    assert client.balance() == 100 - following["credits_used"]
    body = client.get(f"/v1/jobs/{job.id}").json()
    assert body["status"] == "failed" and body["credits_refunded"] == cost
