"""Models are known to be servable before anyone is charged: workers that cannot load their
model never report it ready, submissions for it answer 503, a job already queued for it fails
fast and refunded, and a killed worker's presence expires within its TTL."""

import json
import time

import pytest
import redis
from django.conf import settings
from django.test import Client as DjangoClient

from apps.accounts.models import User
from apps.jobs.availability import PRESENCE_PREFIX
from apps.jobs.models import Job
from bench.processes import wait_until
from tests.conftest import ESMFOLD_JOB, free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

AF2_JOB = {"model": "alphafold2", "sequence": "MKTVRQERLKSIVRILERSKEPVSGAQLAEELSVSRQVIVQDIAYLRSLGY"}
VINA_PARAMS = {"ligand_smiles": "CCO", "protein_pdb": "ATOM"}


def availability(client) -> dict[str, bool]:
    return {model["id"]: model["available"] for model in client.get("/v1/models").json()["models"]}


def presences() -> dict[str, dict]:
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    return {
        key: json.loads(value)
        for key in client.scan_iter(match=PRESENCE_PREFIX + "*")
        if (value := client.get(key)) is not None
    }


def test_models_without_weights_are_unavailable_and_refused_without_charge(
    make_client, start_worker, tiny_esmfold, settings
):
    settings.PHONOS_REQUIRE_AVAILABLE_WORKER = True
    client = make_client(credits=500)
    # No ColabFold data, no DiffDock checkout, and an MSA server where nothing listens.
    broken = start_worker(
        queues="alphafold2,diffdock",
        PHONOS_COLABFOLD_DATA_DIR="",
        PHONOS_DIFFDOCK_DIR="",
        PHONOS_MSA_SERVER_URL=f"http://127.0.0.1:{free_port()}",
    )
    esmfold = start_worker(queues="esmfold", PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold))

    wait_until(
        lambda: availability(client)["esmfold"],
        lambda: f"esmfold to become available:\n{esmfold.log()[-3000:]}",
        timeout=90,
        interval=0.3,
    )
    assert availability(client) == {
        "esmfold": True,
        "alphafold2": False,
        "diffdock": False,
        "vina": False,
    }
    # The broken worker is alive and says why it serves nothing.
    states = {
        model_id: state
        for presence in presences().values()
        for model_id, state in presence["models"].items()
    }
    assert states["esmfold"]["ready"] and states["esmfold"]["memory_bytes"] > 0
    assert states["esmfold"]["device"] == "cpu"
    assert states["esmfold"]["weights"].startswith(str(tiny_esmfold))
    assert (
        not states["alphafold2"]["ready"]
        and "PHONOS_COLABFOLD_DATA_DIR" in (states["alphafold2"]["error"])
    )
    assert not states["diffdock"]["ready"] and "PHONOS_DIFFDOCK_DIR" in states["diffdock"]["error"]
    assert "This worker cannot serve alphafold2" in broken.log()
    assert "This worker cannot serve diffdock" in broken.log()

    # Refused up front: 503 with Retry-After, nothing charged, no job created.
    for path, body in [
        ("/v1/predict", AF2_JOB),
        ("/v1/batch", {"jobs": [ESMFOLD_JOB, AF2_JOB]}),
        (
            "/v1/pipelines",
            {
                "fold": ESMFOLD_JOB,
                "dock": {"model": "diffdock", "params": {"ligand_smiles": "CCO"}},
            },
        ),
    ]:
        response = client.post(path, body)
        assert response.status_code == 503, (path, response.text)
        assert response.json()["error"] == "Model unavailable"
        assert int(response.headers["Retry-After"]) > 0
    assert client.balance() == 500
    assert not Job.objects.exists()
    served = client.post("/v1/predict", ESMFOLD_JOB)
    assert served.status_code == 200, served.text

    # A job queued while the check was off fails fast, refunded: the worker knows it has no data.
    settings.PHONOS_REQUIRE_AVAILABLE_WORKER = False
    queued = client.post("/v1/predict", AF2_JOB).json()
    started = time.monotonic()
    job = wait_until(
        lambda: Job.objects.filter(id=queued["job_id"], status__in=Job.TERMINAL).first(),
        lambda: f"the AlphaFold2 job to fail:\n{broken.log()[-3000:]}",
        timeout=60,
        interval=0.3,
    )
    failed_after = time.monotonic() - started
    assert job.status == Job.Status.FAILED
    assert "PHONOS_COLABFOLD_DATA_DIR" in job.error
    assert job.credits_refunded == queued["credits_used"]
    print(f"queued AlphaFold2 job without data failed after {failed_after:.1f} s")

    # A worker killed outright stops being counted within the presence TTL.
    key = next(key for key, value in presences().items() if "esmfold" in value["models"])
    esmfold.kill_hard()
    killed = time.monotonic()
    wait_until(
        lambda: key not in presences(),
        "the killed worker's presence to expire (its TTL)",
        timeout=settings.PHONOS_WORKER_PRESENCE_TTL_SECONDS + 2,
        interval=0.3,
    )
    expired_after = time.monotonic() - killed
    wait_until(
        lambda: not availability(client)["esmfold"],
        "esmfold to be reported unavailable",
        timeout=settings.PHONOS_AVAILABILITY_CACHE_SECONDS + 5,
        interval=0.3,
    )
    print(f"presence of a SIGKILLed worker expired after {expired_after:.1f} s")


def test_system_status_is_for_staff_only(make_client, start_worker, live_server):
    operator = make_client(name="operator")
    tenant = make_client(name="tenant")
    staff = User.objects.create_user(
        username="ops", password="unused-password-1", account=operator.account, is_staff=True
    )
    start_worker(queues="light")
    wait_until(presences, "the light worker to report itself", timeout=30, interval=0.3)
    Job.objects.create(
        account=tenant.account, model="esmfold", sequence="MKT", cost_credits=0, stage="queued"
    )

    assert tenant.get("/v1/system/status").status_code == 404
    assert tenant.get("/v1/system/status", headers={"Authorization": ""}).status_code == 404
    response = operator.get("/v1/system/status")
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["broker"]["reachable"] and status["database"]["reachable"]
    assert status["build"] and status["version"]
    assert set(status["queues"]) == {"esmfold", "alphafold2", "diffdock", "vina", "light"}
    assert len(status["queues"]["light"]["workers"]) == 1
    assert status["queues"]["esmfold"]["depth"] == 0
    assert status["models"]["esmfold"]["pending"] == 1
    assert status["models"]["esmfold"]["oldest_pending_age_seconds"] >= 0
    assert status["models"]["esmfold"]["available"] is False
    assert [worker["queues"] for worker in status["workers"]] == [["light"]]

    page = DjangoClient()
    assert page.get("/admin/system-status/").status_code == 302  # to the admin login
    page.force_login(staff)
    html = page.get("/admin/system-status/")
    assert html.status_code == 200 and b"System status" in html.content
    # The same staff session reads the API too.
    assert page.get("/v1/system/status").json()["models"]["esmfold"]["pending"] == 1
