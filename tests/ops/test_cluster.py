"""bench/cluster.py, reduced to 30 jobs: two API servers, three workers and beat as separate
processes on PostgreSQL, Redis and SeaweedFS, with an API server and a worker SIGKILLed while
the jobs run. Every job completes once, the ledger reconciles, each webhook arrives once, and
/metrics shows the esmfold queue draining."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.slow
def test_the_cluster_survives_losing_an_api_server_and_a_worker(tmp_path, seaweedfs):
    database = connection.settings_dict
    database_url = (
        f"postgres://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )
    figures_path = tmp_path / "cluster.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "cluster.py"),
            "--jobs",
            "30",
            "--database-url",
            database_url,
            "--redis-url",
            settings.REDIS_URL,
            "--json",
            str(figures_path),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-5000:]
    figures = json.loads(figures_path.read_text())
    assert figures["completed"] == 30 and figures["failed"] == 0 and figures["other"] == 0
    assert figures["duplicate_completions"] == 0
    assert figures["ledger_clean"], figures["ledger"]
    assert figures["webhooks_missing"] == 0 and figures["webhooks_duplicated"] == 0
    assert figures["webhooks_with_request_id"] == 30
    assert figures["queue_depth_max"] > 0 and figures["queue_depth_final"] == 0
    assert figures["api_killed_at_s"] > 0 and figures["worker_killed_at_s"] > 0
    assert figures["metrics_jobs_completed"] == 30
