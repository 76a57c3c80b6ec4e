"""Submit→running latency with the model resident: p50/p99 over sequential ESMFold jobs.

Runs a real Celery worker on Redis with the tiny ESMFold checkpoint (preloaded at process
start), submits jobs one at a time through the job service (the same path as POST /v1/predict:
one transaction, publish on commit), and measures from just before submission to the moment
the worker claimed the job (`started_at`), and to completion.

    .venv/bin/python -m bench.queue_latency [--jobs 50]

Uses its own database (phonos_bench_queue) and Redis DB 8.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.processes import celery_worker_command

DATABASE_URL = "postgres://postgres@127.0.0.1:5432/phonos_bench_queue"
REDIS_URL = "redis://127.0.0.1:6379/8"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    os.environ.update(
        DATABASE_URL=DATABASE_URL, REDIS_URL=REDIS_URL, DJANGO_SETTINGS_MODULE="phonos.settings"
    )
    subprocess.run(
        ["createdb", "-h", "127.0.0.1", "-U", "postgres", "phonos_bench_queue"],
        stderr=subprocess.DEVNULL,
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], check=True)
    subprocess.run(["redis-cli", "-n", "8", "flushdb"], stdout=subprocess.DEVNULL, check=True)

    import django

    django.setup()
    from apps.billing.services import account_open
    from apps.jobs.catalog import submission_clean
    from apps.jobs.models import Job
    from apps.jobs.services import job_submit
    from workers.checkpoints import write_tiny_esmfold

    workdir = Path(tempfile.mkdtemp(prefix="phonos-queue-bench-"))
    weights = write_tiny_esmfold(workdir / "tiny-esmfold")
    log = (workdir / "worker.log").open("w")
    worker = subprocess.Popen(
        celery_worker_command("esmfold"),
        env={
            **os.environ,
            "PHONOS_ESMFOLD_WEIGHTS": str(weights),
            "PHONOS_STORAGE_DIR": str(workdir / "storage"),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        while "ready." not in (workdir / "worker.log").read_text():
            time.sleep(0.2)
        time.sleep(5)  # let the pool process finish preloading the model
        account = account_open(
            username=f"bench-{time.time_ns()}", email="b@example.com", credits=10 * (args.jobs + 1)
        )
        submission = submission_clean({"model": "esmfold", "sequence": "MKTVRQERLKSIVRILERSK"})
        to_running, to_done = [], []
        for _ in range(args.jobs + 1):
            submitted = time.time()
            # Identical submissions would be answered from the result cache without a worker
            # (no started_at): bypass it as `Cache-Control: no-cache` does.
            job = job_submit(account=account, api_key=None, submission=submission, use_cache=False)
            while True:
                job.refresh_from_db()
                if job.status in Job.TERMINAL:
                    break
                time.sleep(0.002)
            assert job.status == "completed", job.error
            to_running.append((job.started_at.timestamp() - submitted) * 1000)
            to_done.append((job.finished_at.timestamp() - submitted) * 1000)
        to_running, to_done = to_running[1:], to_done[1:]  # the first job warms the pool
    finally:
        worker.terminate()
        worker.wait()
    print(f"queue latency, {args.jobs} sequential ESMFold jobs (tiny model, resident, Redis)")
    print(
        f"  submit → running : p50 {statistics.median(to_running):7.1f} ms   "
        f"p99 {percentile(to_running, 0.99):7.1f} ms"
    )
    print(
        f"  submit → complete: p50 {statistics.median(to_done):7.1f} ms   "
        f"p99 {percentile(to_done, 0.99):7.1f} ms  (20 residues, CPU)"
    )


if __name__ == "__main__":
    main()
