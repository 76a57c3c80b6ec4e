"""One grep of a request id follows a job: the API's access line, the job row, the worker's
JSON log lines while it runs the job, the webhook delivery's log line and its X-Request-ID."""

import io
import json
import logging
import time
import uuid

import pytest
import requests

from apps.jobs.models import Job
from apps.ops.logs import LogContextFilter, PhonosJsonFormatter
from apps.webhooks.models import WebhookDelivery
from tests.conftest import ESMFOLD_JOB
from tests.webhooks.conftest import FAST_RETRY_SCHEDULE, webhook_create

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def api_log() -> io.StringIO:
    """The API's request log lines, formatted as production formats them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(LogContextFilter())
    handler.setFormatter(PhonosJsonFormatter())
    request_logger = logging.getLogger("phonos.request")
    request_logger.addHandler(handler)
    yield stream
    request_logger.removeHandler(handler)


def test_a_client_request_id_is_returned_and_a_bad_one_replaced(live_server, api_log):
    given = requests.get(
        f"{live_server.url}/v1/health/live", headers={"X-Request-ID": "abc-123"}, timeout=10
    )
    assert given.headers["X-Request-ID"] == "abc-123"
    for hostile in ("x" * 65, "two words", "a\u00e9b", "{json}"):
        response = requests.get(
            f"{live_server.url}/v1/health/live",
            headers={"X-Request-ID": hostile.encode().decode("latin-1")},
            timeout=10,
        )
        replaced = response.headers["X-Request-ID"]
        assert replaced != hostile and len(replaced) == 32
    generated = requests.get(f"{live_server.url}/v1/health", timeout=10).headers["X-Request-ID"]
    assert len(generated) == 32
    lines = [json.loads(line) for line in api_log.getvalue().splitlines()]
    assert {
        "request_id": "abc-123",
        "endpoint": "/v1/health/live",
        "status": 200,
        "level": "INFO",
    }.items() <= lines[0].items()


@pytest.mark.slow
def test_one_grep_follows_a_job_from_request_to_webhook(
    alice, receiver, start_worker, loopback_allowed, tiny_esmfold, settings, api_log
):
    settings.PHONOS_METRICS_TOKEN = TOKEN
    worker = start_worker(
        queues="esmfold,light",
        PHONOS_LOG_FORMAT="json",
        PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold),
        PHONOS_WEBHOOK_ALLOW_HTTP="true",
        PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
        PHONOS_WEBHOOK_RETRY_SCHEDULE=FAST_RETRY_SCHEDULE,
    )
    webhook_create(alice, receiver.url)
    request_id = f"trail-{uuid.uuid4().hex[:12]}"

    response = alice.post("/v1/predict", json=ESMFOLD_JOB, headers={"X-Request-ID": request_id})
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == request_id
    job_id = response.json()["job_id"]

    [delivery] = receiver.wait_for(1, timeout=120)
    assert delivery.json()["event"] == "job.completed"
    assert delivery.headers["X-Request-ID"] == request_id
    assert Job.objects.get(id=job_id).request_id == request_id
    assert WebhookDelivery.objects.get().request_id == request_id

    # The delivery's log line is written just after the receiver answered.
    deadline = time.monotonic() + 20
    while "Webhook delivery" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    api_lines = [json.loads(line) for line in api_log.getvalue().splitlines()]
    worker_lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    trail = [line for line in api_lines + worker_lines if request_id in json.dumps(line)]
    messages = [line["message"] for line in trail]
    assert "POST /v1/predict 200" in messages
    assert f"Job {job_id} started: esmfold, attempt 1" in messages
    assert f"Job {job_id} completed" in messages
    assert any(message.startswith("Webhook delivery ") for message in messages), messages
    assert all(line["request_id"] == request_id for line in trail)
    job_lines = [line for line in trail if line.get("job_id")]
    assert job_lines and all(line["job_id"] == job_id for line in job_lines)

    # The worker's figures reached the metrics any API process renders.
    metrics = requests.get(
        f"{alice.base_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ).text
    assert 'phonos_jobs_total{model="esmfold",status="completed"} 1.0' in metrics
    assert 'phonos_job_run_seconds_count{model="esmfold"} 1.0' in metrics
    assert 'phonos_job_queue_seconds_count{model="esmfold"} 1.0' in metrics
    assert 'phonos_webhook_deliveries_total{outcome="succeeded"} 1.0' in metrics
