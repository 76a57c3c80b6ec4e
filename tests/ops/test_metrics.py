"""GET /metrics: token-gated, Prometheus text, figures from every process through Redis."""

import json

import pytest
import redis
import requests
from django.conf import settings as django_settings
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ESMFOLD_JOB

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-for-tests"


def scrape(base_url: str) -> dict[str, list]:
    response = requests.get(
        f"{base_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(families: dict[str, list], sample_name: str, **labels: str) -> float | None:
    family_name = sample_name.removesuffix("_total").removesuffix("_bucket")
    family_name = family_name.removesuffix("_sum").removesuffix("_count")
    for sample in families.get(family_name, []):
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def test_metrics_is_404_without_a_token_setting(live_server, settings):
    settings.PHONOS_METRICS_TOKEN = ""
    response = requests.get(
        f"{live_server.url}/metrics", headers={"Authorization": "Bearer "}, timeout=10
    )
    assert response.status_code == 404
    assert response.json()["error"] == "Not Found"


def test_metrics_needs_the_token(live_server, settings):
    settings.PHONOS_METRICS_TOKEN = TOKEN
    for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = requests.get(f"{live_server.url}/metrics", headers=header, timeout=10)
        assert response.status_code == 401
        assert response.json()["error"] == "Unauthorized"


def test_requests_are_counted_by_route_never_by_raw_path(live_server, settings, alice):
    settings.PHONOS_METRICS_TOKEN = TOKEN
    for job_id in ("a" * 8, "b" * 8, "c" * 8):
        assert alice.get(f"/v1/jobs/{job_id}").status_code == 404
    assert requests.get(f"{live_server.url}/no/such/{'x' * 20}", timeout=10).status_code == 404
    families = scrape(live_server.url)
    assert (
        value(families, "phonos_http_requests_total", endpoint="/v1/jobs/{job_id}", status="404")
        == 3
    )
    assert value(families, "phonos_http_requests_total", endpoint="unmatched", status="404") == 1
    assert (
        value(families, "phonos_http_request_duration_seconds_count", endpoint="/v1/jobs/{job_id}")
        == 3
    )
    endpoints = {sample.labels.get("endpoint") for sample in families["phonos_http_requests"]}
    assert not any("aaaaaaaa" in endpoint or "xxxx" in endpoint for endpoint in endpoints)


def test_submissions_debits_queues_and_worker_presence_are_shown(live_server, settings, alice):
    settings.PHONOS_METRICS_TOKEN = TOKEN
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    # The presence record every worker writes (contracts: `phonos:worker:<hostname>`).
    client.set(
        "phonos:worker:gpu1@node",
        json.dumps(
            {
                "hostname": "gpu1@node",
                "pid": 1,
                "queues": ["esmfold"],
                "version": "test",
                "started_at": "2026-01-01T00:00:00+00:00",
                "seen_at": "2026-01-01T00:00:00+00:00",
                "models": {
                    "esmfold": {
                        "ready": True,
                        "device": "cuda:0",
                        "memory_bytes": 1,
                        "weights": "x",
                        "error": None,
                    },
                    "alphafold2": {
                        "ready": False,
                        "device": None,
                        "memory_bytes": None,
                        "weights": None,
                        "error": "no params",
                    },
                },
            }
        ),
        ex=30,
    )
    client.set("phonos:worker:broken@node", b"not json", ex=30)
    for _ in range(2):
        # Two runs, not one run shared by an identical submission (result reuse).
        body = {**ESMFOLD_JOB, "params": {"cache": False}}
        assert alice.post("/v1/predict", json=body).status_code == 200
    families = scrape(live_server.url)
    assert value(families, "phonos_credits_debited_total", model="esmfold") == 2 * 10
    assert value(families, "phonos_queue_depth", queue="esmfold") == 2  # no worker is running
    assert value(families, "phonos_queue_depth", queue="light") == 0
    assert value(families, "phonos_workers_ready", model="esmfold") == 1
    assert value(families, "phonos_workers_ready", model="alphafold2") == 0
    for name in (
        "phonos_jobs",
        "phonos_job_queue_seconds",
        "phonos_job_run_seconds",
        "phonos_gpu_seconds",
        "phonos_webhook_deliveries",
    ):
        assert name in families  # declared even before any sample
