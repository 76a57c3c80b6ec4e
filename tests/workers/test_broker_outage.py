"""A submission made while Redis is down is not lost: the sweeper publishes it once Redis is
back. Runs its own Redis and its own gunicorn, so stopping Redis disturbs nothing else."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import gemmi
import pytest
import requests

from apps.accounts.services import api_key_create
from apps.billing.services import account_open
from apps.jobs.models import Job
from tests.conftest import ESMFOLD_JOB, free_port, worker_environment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def start_redis(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis did not start")


def start_api(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "phonos.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    for _ in range(200):
        try:
            requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=0.5)
            return process
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(log.read_text())


def test_a_job_submitted_while_redis_is_down_runs_when_it_returns(
    start_worker, s3_storage, tiny_esmfold, tmp_path
):
    redis_port, api_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    account = account_open(username="outage", email="outage@example.com", credits=100)
    key = api_key_create(account=account, rate_limit_per_minute=100).raw_key
    headers = {"Authorization": f"Bearer {key}"}
    env = worker_environment(REDIS_URL=redis_url, **s3_storage)
    redis_server = start_redis(redis_port)
    api = start_api(api_port, env, tmp_path / "api.log")
    try:
        redis_server.terminate()
        redis_server.wait()
        response = requests.post(
            f"http://127.0.0.1:{api_port}/v1/predict",
            json=ESMFOLD_JOB,
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        job = Job.objects.get(id=job_id)
        assert (job.status, job.enqueued_at) == ("pending", None)

        redis_server = start_redis(redis_port)
        start_worker(
            queues="esmfold,light",
            beat=True,
            REDIS_URL=redis_url,
            PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold),
            PHONOS_SWEEP_INTERVAL_SECONDS="1",
            **s3_storage,
        )
        deadline = time.monotonic() + 120
        while Job.objects.get(id=job_id).status != "completed":
            assert time.monotonic() < deadline, Job.objects.get(id=job_id).status
            time.sleep(0.3)
        download = requests.get(
            f"http://127.0.0.1:{api_port}/v1/jobs/{job_id}/download", headers=headers, timeout=30
        )
        assert download.status_code == 200
        assert gemmi.read_pdb_string(download.text)[0].count_atom_sites() > 0
        account.refresh_from_db()
        assert account.credit_balance == 90
    finally:
        api.terminate()
        api.wait()
        redis_server.terminate()
        redis_server.wait()
