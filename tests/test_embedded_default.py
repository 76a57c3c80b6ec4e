"""The embedded default (no DATABASE_URL, no REDIS_URL): its SQLite Celery broker takes the
settings' transport options (a Redis-only option once crashed every worker of `scripts/run`),
and a submission and the polled reads work on SQLite over HTTP (the hot path's hand-written SQL
once answered 500 there)."""

import os
import subprocess
import sys
from pathlib import Path

import requests

from tests.conftest import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]


def _embedded(tmp_path: Path) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "REDIS_URL", "PHONOS_ENV", "DJANGO_SETTINGS_MODULE"}
    }
    environment.update(PHONOS_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="phonos.settings")
    return environment


def _run(environment: dict[str, str], *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _manage(environment: dict[str, str], *arguments: str) -> str:
    return _run(environment, "manage.py", *arguments)


def test_the_embedded_broker_accepts_the_transport_options(tmp_path: Path) -> None:
    code = (
        "import django; django.setup()\n"
        "from phonos.celery import app\n"
        "assert app.conf.broker_url.startswith('sqla+sqlite')\n"
        "with app.connection_for_write() as connection:\n"
        "    connection.default_channel.queue_declare(queue='light')\n"
        "print('declared')\n"
    )
    assert "declared" in _run(_embedded(tmp_path), "-c", code)


def test_the_embedded_default_submits_and_serves_jobs_over_http(tmp_path: Path) -> None:
    """The quick start's stores (SQLite, its Celery broker, no Redis) under gunicorn: the
    submission's hand-written statements have their SQLite forms (a plain predict, one riding on
    it, one with `Cache-Control: no-cache` that is published), and the polled reads answer."""
    environment = _embedded(tmp_path)
    _manage(environment, "migrate", "--noinput", "-v", "0")
    key = (
        _manage(
            environment,
            "shell",
            "-c",
            "from apps.accounts.services import api_key_create\n"
            "from apps.billing.services import account_open\n"
            "account = account_open(username='quick', email='q@example.com', credits=100)\n"
            "print('KEY', api_key_create(account=account, name='k').raw_key)\n",
        )
        .split("KEY ")[1]
        .strip()
    )
    port = free_port()
    log = tmp_path / "gunicorn.log"
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "phonos.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            "--workers=1",
            "--log-level=warning",
        ],
        cwd=ROOT,
        env=environment,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        wait_until_serving(url, server, log, timeout=60)
        job = {"model": "esmfold", "sequence": "MGSSHHHHHHSSGLVPRGSH", "name": "quick"}
        answers = [
            requests.post(url + "/v1/predict", json=job, headers=headers, timeout=30),
            requests.post(url + "/v1/predict", json=job, headers=headers, timeout=30),
            requests.post(
                url + "/v1/predict",
                json=job,
                headers={**headers, "Cache-Control": "no-cache"},
                timeout=30,
            ),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
        first, riding, own = (
            requests.get(f"{url}/v1/jobs/{answer.json()['job_id']}", headers=headers, timeout=30)
            for answer in answers
        )
        for read in (first, riding, own):
            assert read.status_code == 200 and read.json()["status"] == "pending", read.text
        first, riding, own = first.json(), riding.json(), own.json()
        assert riding["cached_from"] == first["job_id"] and own["cached_from"] is None
        listed = requests.get(url + "/v1/jobs?limit=50", headers=headers, timeout=30)
        assert listed.status_code == 200 and len(listed.json()["jobs"]) == 3, listed.text
        # 3 submissions, 3 reads and the list, buffered in the process and stored before the
        # usage report answers (counted up to the report itself, which records after it).
        usage = requests.get(url + "/v1/usage", headers=headers, timeout=30)
        assert usage.status_code == 200, usage.text
        assert usage.json()["totals"]["requests"] == 7
        assert usage.json()["totals"]["credits_used"] == 30
    finally:
        server.terminate()
        server.wait(timeout=30)
    published = _manage(
        environment,
        "shell",
        "-c",
        "from apps.jobs.models import Job\n"
        "print('PUBLISHED', sorted(str(i) for i in Job.objects.filter(enqueued_at__isnull=False)"
        ".values_list('id', flat=True)))\n",
    )
    assert f"'{first['job_id']}'" in published and f"'{own['job_id']}'" in published
