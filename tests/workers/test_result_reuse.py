"""Identical requests never run twice: result reuse, single-flight, opt-outs, /v1/cache/check
and `Prefer: wait`, through real HTTP and a real ESMFold worker (tiny random checkpoint)."""

import json
import re
import time

import pytest

from apps.jobs.job_keys import msa_cache_path
from apps.jobs.models import Job, JobEvent
from apps.webhooks.models import Webhook, WebhookDelivery
from tests.conftest import parallel
from tests.workers.test_job_flow import LONG_JOB, wait_for_status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST = {"model": "esmfold", "sequence": "MKTVRQERLKSIVRILERSKEPVSG", "name": "fast"}


def runs_started(worker) -> list[str]:
    """The jobs this worker ran, from its own log: one line per run started."""
    return re.findall(r"Job ([0-9a-f-]{36}) started", worker.log())


@pytest.fixture
def esmfold_worker(start_worker, tiny_esmfold):
    return start_worker(queues="esmfold", PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold))


def test_an_identical_resubmission_is_served_at_once_from_the_stored_result(
    alice, charlie, esmfold_worker, settings
):
    check = alice.post("/v1/cache/check", FAST).json()
    assert check == {"cached": False, "job_id": None, "msa_cached": False}
    first_id = alice.post("/v1/predict", FAST).json()["job_id"]
    first = wait_for_status(alice, first_id, {"completed", "failed"})
    assert first["status"] == "completed" and first["cached"] is False
    assert first["cached_from"] is None
    assert alice.post("/v1/cache/check", FAST).json() == {
        "cached": True,
        "job_id": first_id,
        "msa_cached": False,
    }
    balance = alice.balance()

    # The same request, written differently (case, whitespace): the same canonical job.
    started = time.perf_counter()
    response = alice.post("/v1/predict", {**FAST, "sequence": FAST["sequence"].lower() + "\n"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert elapsed <= 0.1, f"a reused result took {elapsed * 1000:.0f} ms"
    second = alice.get(f"/v1/jobs/{response.json()['job_id']}").json()
    assert (second["cached"], second["cached_from"]) == (True, first_id)
    assert second["credits_used"] == 0 and alice.balance() == balance
    assert runs_started(esmfold_worker) == [first_id]  # no task ran for it
    stored = Job.objects.get(id=second["job_id"])
    assert stored.started_at is None and stored.job_key == Job.objects.get(id=first_id).job_key

    # Opt-outs: params.cache false and Cache-Control: no-cache each run the model.
    opted = alice.post("/v1/predict", {**FAST, "params": {"cache": False}}).json()
    assert opted["status"] == "pending"
    no_cache = alice.post("/v1/predict", FAST, headers={"Cache-Control": "no-cache"}).json()
    assert no_cache["status"] == "pending"
    for job_id in (opted["job_id"], no_cache["job_id"]):
        body = wait_for_status(alice, job_id, {"completed", "failed"})
        assert (body["status"], body["cached"]) == ("completed", False)
    # The stored params hold what the model computes with; `cache` only steered the serving.
    assert "cache" not in Job.objects.get(id=opted["job_id"]).params

    # Another tenant never reuses alice's result, unless the operator shares results.
    assert charlie.post("/v1/cache/check", FAST).json()["cached"] is False
    charlie_job = charlie.post("/v1/predict", FAST).json()
    assert charlie_job["status"] == "pending"
    assert charlie.get(f"/v1/jobs/{first_id}").status_code == 404
    settings.PHONOS_SHARED_RESULT_CACHE = True
    shared = charlie.post("/v1/predict", FAST).json()
    assert shared["status"] == "completed"

    # Deleting the job that ran keeps the reused job's outputs: they are shared by reference.
    alice_downloads = alice.get(second["download_url"]).content
    assert alice.delete(f"/v1/jobs/{first_id}").status_code == 200
    again = alice.get(second["download_url"])
    assert again.status_code == 200 and again.content == alice_downloads
    assert alice.get(f"/v1/jobs/{second['job_id']}/results/confidence").status_code == 200
    # A deleted job is no source for reuse; the remaining reused job is.
    assert alice.post("/v1/cache/check", FAST).json()["job_id"] != first_id


def test_ten_identical_submissions_at_once_run_once(alice, esmfold_worker):
    Webhook.objects.create(
        account=alice.account, url="https://hooks.example/x", events=["job.completed"]
    )
    body = {**FAST, "sequence": "MSTNPKPQRKTKRNTNRRPQDVKFPGG"}
    responses = parallel([lambda: alice.post("/v1/predict", body)] * 10, workers=10)
    assert [response.status_code for response in responses] == [200] * 10
    job_ids = [response.json()["job_id"] for response in responses]
    assert len(set(job_ids)) == 10
    jobs = [wait_for_status(alice, job_id, {"completed", "failed"}) for job_id in job_ids]
    assert {job["status"] for job in jobs} == {"completed"}
    leaders = [job for job in jobs if not job["cached"]]
    assert len(leaders) == 1
    assert all(job["cached_from"] == leaders[0]["job_id"] for job in jobs if job["cached"])
    assert runs_started(esmfold_worker) == [leaders[0]["job_id"]]
    pdbs = {alice.get(job["download_url"]).content for job in jobs}
    assert len(pdbs) == 1 and b"\nATOM " in next(iter(pdbs))
    for job_id in job_ids:
        # Its own events, ending in its own completion, and its own webhook delivery.
        assert JobEvent.objects.filter(job_id=job_id).last().status == "completed"
        deliveries = [
            json.loads(delivery.payload)["data"]["job_id"]
            for delivery in WebhookDelivery.objects.filter(event="job.completed")
        ]
        assert deliveries.count(job_id) == 1
    # Riders pay the reuse price (0 by default): only the run itself is charged.
    assert sum(job["credits_used"] - job["credits_refunded"] for job in jobs) == 10


def test_a_follower_completes_when_its_leader_is_cancelled(alice, esmfold_worker):
    leader = alice.post("/v1/predict", LONG_JOB).json()["job_id"]
    follower = alice.post("/v1/predict", LONG_JOB).json()["job_id"]
    assert alice.get(f"/v1/jobs/{follower}").json()["cached_from"] == leader
    wait_for_status(alice, leader, {"running"})
    assert alice.post(f"/v1/jobs/{leader}/cancel").status_code == 200
    body = wait_for_status(alice, follower, {"completed", "failed"}, timeout=180)
    assert (body["status"], body["cached"], body["cached_from"]) == ("completed", False, None)
    assert alice.get(body["download_url"]).status_code == 200
    assert follower in runs_started(esmfold_worker)


def test_prefer_wait_answers_with_the_ended_job_or_as_usual(alice, esmfold_worker):
    waited = alice.post(
        "/v1/predict", {**FAST, "sequence": "MAHHHHHHVDDDDK"}, headers={"Prefer": "wait=60"}
    )
    assert waited.status_code == 200
    assert waited.headers["Preference-Applied"] == "wait=60"
    job = waited.json()
    assert job["status"] == "completed" and job["download_url"]
    assert job == alice.get(f"/v1/jobs/{job['job_id']}").json()

    started = time.perf_counter()
    slow = alice.post("/v1/predict", LONG_JOB, headers={"Prefer": "wait=1"})
    assert 1 <= time.perf_counter() - started < 5
    assert "Preference-Applied" not in slow.headers
    assert slow.json()["message"] == "Job submitted successfully"
    assert slow.json()["status"] in {"pending", "running"}


def test_cache_check_reports_a_cached_alphafold2_msa(alice, settings, tmp_path):
    from workers.runners.msa import MsaClient

    settings.PHONOS_MSA_CACHE_DIR = str(tmp_path)
    request = {"model": "alphafold2", "sequence": "MKTAYIAKQR"}
    assert alice.post("/v1/cache/check", request).json()["msa_cached"] is False
    # Written where the worker's MSA client keeps it: one key scheme for both.
    path = MsaClient(cache_dir=tmp_path).cache_path("MKTAYIAKQR")
    assert path == msa_cache_path(tmp_path, "MKTAYIAKQR")
    path.parent.mkdir(parents=True)
    path.write_text(">101\nMKTAYIAKQR\n")
    assert alice.post("/v1/cache/check", request).json()["msa_cached"] is True
    assert alice.balance() == 1000
