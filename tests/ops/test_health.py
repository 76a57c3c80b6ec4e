"""Liveness and readiness over real HTTP, against real PostgreSQL, Redis and SeaweedFS."""

import pytest
import requests

from apps.usage.models import UsageCounter
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_health_keeps_its_contract_and_live_answers_without_a_key(live_server):
    health = requests.get(f"{live_server.url}/v1/health", timeout=10)
    assert health.status_code == 200
    assert health.json() == {
        "status": "operational",
        "version": "v1",
        "message": "PHONOS API is running",
    }
    live = requests.get(f"{live_server.url}/v1/health/live", timeout=10)
    assert live.status_code == 200
    assert live.json() == {"status": "alive"}


def test_ready_checks_every_component(live_server, settings, tmp_path):
    settings.PHONOS_STORAGE_DIR = tmp_path
    response = requests.get(f"{live_server.url}/v1/health/ready", timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["components"]) == {"database", "redis", "object_store"}
    assert all(part["status"] == "ok" for part in body["components"].values())
    assert UsageCounter.objects.count() == 0


def test_ready_names_redis_when_it_cannot_be_reached(live_server, settings, tmp_path):
    settings.PHONOS_STORAGE_DIR = tmp_path
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    response = requests.get(f"{live_server.url}/v1/health/ready", timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "Service Unavailable"
    assert body["message"] == "Not ready: redis failing"
    assert body["components"]["redis"]["status"] == "failing"
    assert body["components"]["database"]["status"] == "ok"


def test_ready_checks_the_s3_bucket(live_server, settings, s3_storage):
    assert requests.get(f"{live_server.url}/v1/health/ready", timeout=10).status_code == 200
    settings.PHONOS_S3_BUCKET = s3_storage["PHONOS_S3_BUCKET"] + "-missing"
    response = requests.get(f"{live_server.url}/v1/health/ready", timeout=10)
    assert response.status_code == 503
    assert "object_store" in response.json()["message"]
    assert response.json()["components"]["object_store"]["status"] == "failing"


def test_ready_names_a_missing_storage_directory(live_server, settings, tmp_path):
    settings.PHONOS_STORAGE_DIR = tmp_path / "not-there"
    response = requests.get(f"{live_server.url}/v1/health/ready", timeout=10)
    assert response.status_code == 503
    assert response.json()["message"] == "Not ready: object_store failing"


def test_operator_endpoints_refuse_other_methods_with_the_envelope(live_server):
    response = requests.post(f"{live_server.url}/v1/health/ready", timeout=10)
    assert response.status_code == 405
    assert response.json()["error"] == "Method Not Allowed"
