"""The ESMFold worker as production runs it: `--pool threads --concurrency N`, real worker
processes, the tiny random checkpoint through the production loading path.

Celery enforces no time limit in a threads pool; the batcher's watchdog does: a forward pass
still running past its jobs' time limit plus the grace fails those jobs (one refund each) and
ends the process, and the supervisor's next worker carries on (docs/workers.md)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from django.conf import settings

from apps.billing.models import LedgerEntry
from apps.jobs.availability import PRESENCE_PREFIX
from apps.jobs.models import Job, JobEvent
from tests.conftest import worker_environment
from tests.hostile.supervisor import SupervisedWorker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

T = TypeVar("T")

# The smallest time limit the settings take, and a short grace: the watchdog acts at ~12 s.
TIME_LIMIT = 10
GRACE = 2
WATCHDOG_EXIT_CODE = 70


def chain(length: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ARNDCQEGHILKMFPSTWYV") for _ in range(length))


def wait_for(predicate: Callable[[], T], timeout: float, message: Callable[[], str]) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(message())


def terminal(job_id: str) -> Job | None:
    return Job.objects.filter(id=job_id, status__in=Job.TERMINAL).first()


@pytest.fixture
def threads_worker(
    tmp_path: Path, transactional_db: None, tiny_esmfold: Path
) -> Iterator[Callable[..., SupervisedWorker]]:
    """An ESMFold worker on the threads pool, restarted after every exit, as a container
    supervisor (Kubernetes, `restart: unless-stopped`) would."""
    workers: list[SupervisedWorker] = []

    def start(*, name: str, concurrency: int = 2, **env: str) -> SupervisedWorker:
        worker = SupervisedWorker(
            name=name,
            queues="esmfold",
            pool="threads",
            concurrency=concurrency,
            # One compute thread: a pass's length is the job's, whatever the machine's cores.
            env=worker_environment(
                OMP_NUM_THREADS="1", PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold), **env
            ),
            log_dir=tmp_path,
        )
        workers.append(worker.start())
        return worker

    yield start
    for worker in workers:
        worker.stop()


def test_a_pass_past_the_time_limit_fails_its_jobs_once_and_a_fresh_worker_takes_over(
    make_client: Any, threads_worker: Callable[..., SupervisedWorker]
) -> None:
    client = make_client(credits=1000)
    # Two long chains share one pass. With one compute thread a trunk pass over them takes
    # far longer than the limit (a minute or more: ~11 s for one 600-residue chain), so no
    # progress report comes before the watchdog's deadline and only the watchdog can end it.
    hung = [
        client.post(
            "/v1/predict",
            {"model": "esmfold", "sequence": chain(length, seed), "params": {"num_recycles": 1}},
        ).json()
        for seed, length in enumerate((1024, 1000))
    ]
    cost = hung[0]["credits_used"]
    # Started after the submissions, so that its two threads hand both jobs to one pass.
    worker = threads_worker(
        name="watchdog",
        PHONOS_TIME_LIMIT_ESMFOLD=str(TIME_LIMIT),
        PHONOS_HARD_LIMIT_GRACE_SECONDS=str(GRACE),
        PHONOS_ESMFOLD_BATCH_WAIT_MS="5000",
    )
    worker.wait_for_log("Model esmfold is ready")
    # The jobs' limits count from here: their tasks waited for the model, then handed them in.
    submitted = time.monotonic()
    failed = [
        wait_for(
            lambda job_id=job["job_id"]: terminal(job_id),
            timeout=120,
            message=lambda: f"the hung pass's jobs never ended:\n{worker.log()[-6000:]}",
        )
        for job in hung
    ]
    failed_after = time.monotonic() - submitted
    for job in failed:
        assert job.status == Job.Status.FAILED
        assert job.error == f"The job exceeded the esmfold time limit of {TIME_LIMIT} s"
        assert job.attempts == 1
        refunds = LedgerEntry.objects.filter(job_id=job.id, kind=LedgerEntry.Kind.REFUND)
        assert [entry.amount for entry in refunds] == [cost]
    # Both shared the pass, and neither ended before its limit and the grace: counted from the
    # job's own claim (its limit starts at the hand-in, just after), not from when this test
    # noticed the worker ready, which a loaded machine delays.
    for job in failed:
        assert job.started_at is not None and job.finished_at is not None
        assert (job.finished_at - job.started_at).total_seconds() >= TIME_LIMIT + GRACE, job
    assert "forward pass of 2 jobs is still running" in worker.log()
    assert "cannot be interrupted: 2 jobs fail" in worker.log()

    wait_for(
        lambda: worker.exit_codes,
        timeout=60,
        message=lambda: f"the worker did not exit:\n{worker.log()[-6000:]}",
    )
    exited_after = time.monotonic() - submitted
    assert worker.exit_codes == [WATCHDOG_EXIT_CODE]
    log_dir = worker.log_dir
    wait_for(
        lambda: "Model esmfold is ready" in (log_dir / "watchdog-1.log").read_text(),
        timeout=120,
        message=lambda: f"no worker took over:\n{worker.log()[-6000:]}",
    )
    restarted_after = time.monotonic() - submitted

    # The next job runs on the fresh worker.
    following = client.post(
        "/v1/predict", {"model": "esmfold", "sequence": chain(40, 7), "params": {}}
    ).json()
    after = wait_for(
        lambda: terminal(following["job_id"]),
        timeout=120,
        message=lambda: f"the next job never ended:\n{worker.log()[-6000:]}",
    )
    assert after.status == Job.Status.COMPLETED, after.error
    wait_for(
        lambda: f"Job {after.id} completed" in (log_dir / "watchdog-1.log").read_text(),
        timeout=30,
        message=lambda: f"the fresh worker did not run the next job:\n{worker.log()[-6000:]}",
    )
    assert worker.starts == 2

    # The failed jobs are not run again. Their messages were acknowledged before the exit, or
    # put back with the process's others; either way a delivery finds the job terminal, as
    # these deliveries of their messages do.
    from workers.tasks import run_job

    for job in failed:
        run_job.apply_async(args=[str(job.id)], queue="esmfold")
    for job in failed:
        wait_for(
            lambda job_id=job.id: (
                f"Job {job_id} not claimed (status failed)"
                in (log_dir / "watchdog-1.log").read_text()
            ),
            timeout=60,
            message=lambda: f"a redelivery was not refused:\n{worker.log()[-6000:]}",
        )
    second_log = (log_dir / "watchdog-1.log").read_text()
    for job in failed:
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED and job.attempts == 1
        assert f"Job {job.id} started" not in second_log
        statuses = list(
            JobEvent.objects.filter(job_id=job.id).order_by("id").values_list("status", flat=True)
        )
        assert statuses[-1] == "failed" and statuses.count("failed") == 1
        assert (
            statuses.count("running") >= 1 and "running" not in statuses[statuses.index("failed") :]
        )
    # The ledger is exact: three debits, two refunds, one completed job paid for.
    assert client.balance() == 1000 - following["credits_used"]
    assert (
        LedgerEntry.objects.filter(account=client.account, kind=LedgerEntry.Kind.REFUND).count()
        == 2
    )
    print(
        f"\nwatchdog: jobs failed {failed_after:.1f} s after the worker took them "
        f"(limit {TIME_LIMIT} s + grace {GRACE} s), worker exited at {exited_after:.1f} s, "
        f"a fresh worker reported its model ready at {restarted_after:.1f} s"
    )


def presence(hostname_part: str) -> dict[str, Any] | None:
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    for key in client.scan_iter(match=f"{PRESENCE_PREFIX}*{hostname_part}*"):
        value = client.get(key)
        if value:
            loaded: dict[str, Any] = json.loads(value)
            return loaded
    return None


def test_a_threads_worker_loads_its_model_and_reports_it_ready_before_any_job(
    make_client: Any, threads_worker: Callable[..., SupervisedWorker], tiny_esmfold: Path
) -> None:
    worker = threads_worker(name="ready")
    ready = wait_for(
        lambda: (found := presence("ready-")) and found["models"]["esmfold"]["ready"] and found,
        timeout=120,
        message=lambda: f"the model was never reported ready:\n{worker.log()[-6000:]}",
    )
    assert worker.process is not None
    # The threads pool runs jobs in the worker's own process: that process holds the model.
    assert ready["pid"] == worker.process.pid
    assert ready["queues"] == ["esmfold"]
    state = ready["models"]["esmfold"]
    assert state["device"] == "cpu" and state["error"] is None
    assert state["weights"] == f"{tiny_esmfold} (untrained)"
    assert "Job " not in worker.log()

    # The first job does not pay for the load.
    client = make_client()
    job_id = client.post(
        "/v1/predict", {"model": "esmfold", "sequence": chain(30, 3), "params": {}}
    ).json()["job_id"]
    job = wait_for(
        lambda: terminal(job_id),
        timeout=120,
        message=lambda: f"the job never ended:\n{worker.log()[-6000:]}",
    )
    assert job.status == Job.Status.COMPLETED, job.error
    assert job.metadata["timings"]["load_s"] < 0.05


BASE = "MKTVRQERLKSIVRILERSKEPVSGAQLAEELSVSRQVIVQDIAYLRSLGYNIVATPRGYVLAGG"


def test_a_cancel_inside_a_threads_pool_batch_ends_only_that_job(
    make_client: Any, threads_worker: Callable[..., SupervisedWorker]
) -> None:
    client = make_client(credits=1000)
    # Long enough (seconds together) to be cancelled mid-pass.
    sequences = [BASE, BASE[:62], BASE[:58]]
    jobs = [
        client.post(
            "/v1/predict",
            {"model": "esmfold", "sequence": sequence, "params": {"num_recycles": 16}},
        ).json()
        for sequence in sequences
    ]
    cost = jobs[0]["credits_used"]
    # Started after the submissions, so that its three threads hold all three jobs at once.
    worker = threads_worker(name="cancel", concurrency=3, PHONOS_ESMFOLD_BATCH_WAIT_MS="5000")
    doomed = jobs[1]["job_id"]
    wait_for(
        lambda: (Job.objects.get(id=doomed).progress or 0) > 0,
        timeout=120,
        message=lambda: f"the batch never got going:\n{worker.log()[-6000:]}",
    )
    assert client.post(f"/v1/jobs/{doomed}/cancel").status_code == 200
    for job in jobs:
        ended = wait_for(
            lambda job_id=job["job_id"]: terminal(job_id),
            timeout=180,
            message=lambda: f"a job never ended:\n{worker.log()[-6000:]}",
        )
        refunds = LedgerEntry.objects.filter(job_id=ended.id, kind=LedgerEntry.Kind.REFUND)
        if str(ended.id) == doomed:
            assert ended.status == Job.Status.CANCELLED
            assert [entry.amount for entry in refunds] == [cost]
            continue
        assert ended.status == Job.Status.COMPLETED, ended.error
        assert ended.metadata["batch"]["size"] == 3
        assert not refunds.exists()
    # The cancel's revoke(terminate=True) is a no-op on threads: the worker kept running.
    assert worker.exit_codes == [] and worker.starts == 1
    assert worker.process is not None and worker.process.poll() is None
    assert client.balance() == 1000 - 2 * cost
