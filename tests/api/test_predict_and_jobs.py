import uuid

import pytest

from apps.billing.models import LedgerEntry
from apps.jobs.models import Job
from apps.jobs.services import job_complete, job_fail, job_start
from apps.jobs.storage import get_storage
from tests.api.test_auth_and_errors import assert_error
from tests.conftest import ESMFOLD_JOB, GLYCINE_PDB

pytestmark = pytest.mark.django_db(transaction=True)


def test_predict_charges_the_model_cost_and_records_the_debit(alice):
    response = alice.post("/v1/predict", json=ESMFOLD_JOB)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "success": True,
        "job_id": body["job_id"],
        "model": "esmfold",
        "status": "pending",
        "credits_used": 10,
        "message": "Job submitted successfully",
    }
    assert alice.balance() == 990
    entry = LedgerEntry.objects.get(job_id=body["job_id"])
    assert (entry.kind, entry.amount, entry.balance_after) == ("job_debit", -10, 990)
    assert response.headers["RateLimit-Limit"] == "1000"


def test_whitespace_and_lowercase_are_normalised(alice):
    job_id = alice.post(
        "/v1/predict", json={"model": "esmfold", "sequence": " mkt\nvrq  erl\t"}
    ).json()["job_id"]
    assert Job.objects.get(id=job_id).sequence == "MKTVRQERL"


def test_docking_checks_the_ligand_and_the_protein(alice):
    ok = alice.post(
        "/v1/predict",
        json={
            "model": "diffdock",
            "sequence": "CC(=O)Oc1ccccc1C(=O)O",
            "params": {"protein_pdb": GLYCINE_PDB},
        },
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["credits_used"] == 30
    job = Job.objects.get(id=ok.json()["job_id"])
    assert job.params["ligand_smiles"] == "CC(=O)Oc1ccccc1C(=O)O"
    assert job.params["inference_steps"] == 20

    no_atoms = alice.post(
        "/v1/predict",
        json={"model": "diffdock", "sequence": "CCO", "params": {"protein_pdb": "HEADER\nEND\n"}},
    )
    assert "protein_pdb" in assert_error(no_atoms, 400)["message"]
    path = alice.post(
        "/v1/predict",
        json={"model": "diffdock", "sequence": "CCO", "params": {"protein_pdb": "/etc/passwd"}},
    )
    assert "protein_pdb" in assert_error(path, 400)["message"]


def test_insufficient_credits_get_402_and_nothing_is_created(make_client):
    poor = make_client(credits=5)
    body = assert_error(poor.post("/v1/predict", json=ESMFOLD_JOB), 402)
    assert "10 credits" in body["message"]
    assert Job.objects.filter(account=poor.account).count() == 0
    assert poor.balance() == 5


def test_job_detail_follows_the_contract(alice):
    job_id = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    body = alice.get(f"/v1/jobs/{job_id}").json()
    assert {"job_id", "name", "status", "created_at", "updated_at"} <= set(body)
    assert body["job_id"] == job_id and body["status"] == "pending" and body["name"] == "demo"
    assert "download_url" not in body


def test_another_tenants_job_answers_404_everywhere(alice, charlie):
    job_id = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    for response in (
        charlie.get(f"/v1/jobs/{job_id}"),
        charlie.get(f"/v1/jobs/{job_id}/download"),
        charlie.post(f"/v1/jobs/{job_id}/cancel"),
        charlie.delete(f"/v1/jobs/{job_id}"),
    ):
        assert_error(response, 404)
    assert charlie.get("/v1/jobs").json()["pagination"]["total"] == 0
    assert alice.get(f"/v1/jobs/{job_id}").json()["status"] == "pending"


def test_unknown_and_malformed_job_ids_answer_404(alice):
    assert_error(alice.get(f"/v1/jobs/{uuid.uuid4()}"), 404)
    assert_error(alice.get("/v1/jobs/not-a-uuid"), 404)


def test_list_filters_and_paginates(alice):
    for index in range(5):
        alice.post("/v1/predict", json={**ESMFOLD_JOB, "name": f"job {index}"})
    alice.post("/v1/predict", json={**ESMFOLD_JOB, "model": "alphafold2"})
    page = alice.get("/v1/jobs", params={"model": "esmfold", "limit": 2, "offset": 1}).json()
    assert page["pagination"] == {"total": 5, "limit": 2, "offset": 1, "has_more": True}
    assert [job["name"] for job in page["jobs"]] == ["job 3", "job 2"]
    assert alice.get("/v1/jobs", params={"model": "alphafold2"}).json()["pagination"]["total"] == 1
    assert alice.get("/v1/jobs", params={"status": "completed"}).json()["jobs"] == []
    assert alice.get("/v1/jobs", params={"limit": 100}).status_code == 200
    for bad in (
        {"limit": 101},
        {"limit": 0},
        {"offset": -1},
        {"status": "done"},
        {"model": "nope"},
        {"limit": "ten"},
    ):
        assert_error(alice.get("/v1/jobs", params=bad), 400)


def test_cancel_refunds_once_and_terminal_jobs_cannot_be_cancelled(alice):
    job_id = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    response = alice.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "job_id": job_id,
        "status": "cancelled",
        "credits_refunded": 10,
        "message": "Job cancelled successfully",
    }
    assert alice.balance() == 1000
    again = alice.post(f"/v1/jobs/{job_id}/cancel")
    assert "already cancelled" in assert_error(again, 400)["message"]
    assert alice.balance() == 1000
    assert LedgerEntry.objects.filter(job_id=job_id, kind="refund").count() == 1


def test_failed_jobs_are_refunded_exactly_once(alice):
    job_id = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    job_start(job_id=job_id)
    assert job_fail(job_id=job_id, error="GPU fell off the bus") is True
    assert job_fail(job_id=job_id, error="again") is False
    assert alice.balance() == 1000
    body = alice.get(f"/v1/jobs/{job_id}").json()
    assert body["status"] == "failed" and body["error"] == "GPU fell off the bus"
    assert body["credits_refunded"] == 10


def test_delete_only_terminal_jobs(alice):
    job_id = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    assert "cancel it" in assert_error(alice.delete(f"/v1/jobs/{job_id}"), 400)["message"]
    alice.post(f"/v1/jobs/{job_id}/cancel")
    response = alice.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "deleted"
    assert_error(alice.get(f"/v1/jobs/{job_id}"), 404)
    assert_error(alice.delete(f"/v1/jobs/{job_id}"), 404)
    assert alice.get("/v1/jobs").json()["pagination"]["total"] == 0


def test_download_before_completion_is_400_and_after_it_serves_the_stored_pdb(alice, tmp_path):
    job_id = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    assert "completed" in assert_error(alice.get(f"/v1/jobs/{job_id}/download"), 400)["message"]

    job = job_start(job_id=job_id)
    pdb = tmp_path / "out.pdb"
    pdb.write_text(
        "ATOM      1  CA  MET A   1       0.000   0.000   0.000  1.00 87.50           C\n"
    )
    get_storage().put_file(
        f"accounts/{job.account_id}/jobs/{job.id}/{job.id}.pdb", pdb, "chemical/x-pdb"
    )
    assert job_complete(job_id=job_id, output_file=f"{job_id}.pdb", summary={}, metadata={})

    detail = alice.get(f"/v1/jobs/{job_id}").json()
    assert detail["output_file"] == f"{job_id}.pdb"
    assert detail["download_url"] == f"/v1/jobs/{job_id}/download"
    listed = alice.get("/v1/jobs").json()["jobs"][0]
    assert listed["download_url"] == f"/v1/jobs/{job_id}/download"
    download = alice.get(detail["download_url"])
    assert download.status_code == 200
    assert download.content == pdb.read_bytes()
    assert f'filename="{job_id}.pdb"' in download.headers["Content-Disposition"]


def test_a_completed_job_cannot_then_be_cancelled_and_keeps_its_charge(alice):
    job_id = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    job_start(job_id=job_id)
    assert job_complete(job_id=job_id, output_file="x.pdb", summary={}, metadata={})
    assert_error(alice.post(f"/v1/jobs/{job_id}/cancel"), 400)
    assert alice.balance() == 990


def test_a_cancelled_job_that_a_worker_finishes_late_stays_cancelled(alice):
    job_id = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    job_start(job_id=job_id)
    assert alice.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert job_complete(job_id=job_id, output_file="x.pdb", summary={}, metadata={}) is False
    assert alice.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert alice.balance() == 1000


def test_account_reports_balance_and_job_counts(alice):
    first = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    # A job of its own, not one riding on the first's run (which would fail with it).
    alice.post("/v1/predict", json={**ESMFOLD_JOB, "params": {"cache": False}})
    job_start(job_id=first)
    job_fail(job_id=first, error="boom")
    body = alice.get("/v1/account").json()
    assert body["account"]["username"] == "alice"
    assert body["account"]["email"] == "alice@example.com"
    assert body["credits"] == {"balance": 990, "currency": "credits"}
    assert body["jobs"] == {"total": 2, "completed": 0, "active": 1, "failed": 1, "cancelled": 0}


def test_the_active_job_cap_answers_429(make_client):
    capped = make_client(max_active_jobs=2)
    assert [capped.post("/v1/predict", json=ESMFOLD_JOB).status_code for _ in range(2)] == [
        200,
        200,
    ]
    body = assert_error(capped.post("/v1/predict", json=ESMFOLD_JOB), 429)
    assert "2 active jobs" in body["message"]
    assert capped.balance() == 980


def test_the_global_queue_capacity_answers_429(alice, settings):
    settings.PHONOS_QUEUE_CAPACITY = 1
    assert alice.post("/v1/predict", json=ESMFOLD_JOB).status_code == 200
    body = assert_error(alice.post("/v1/predict", json=ESMFOLD_JOB), 429)
    assert "capacity" in body["message"]
    assert alice.balance() == 990


def test_cancels_racing_completions_never_lose_an_update(alice):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    job_ids = [alice.post("/v1/predict", ESMFOLD_JOB).json()["job_id"] for _ in range(12)]
    for job_id in job_ids:
        job_start(job_id=job_id)

    def complete(job_id: str) -> bool:
        try:
            return job_complete(job_id=job_id, output_file="x.pdb", summary={}, metadata={})
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=24) as pool:
        cancels = [pool.submit(alice.post, f"/v1/jobs/{job_id}/cancel") for job_id in job_ids]
        completes = [pool.submit(complete, job_id) for job_id in job_ids]
    for job_id, cancel, completed in zip(job_ids, cancels, completes, strict=True):
        job = Job.objects.get(id=job_id)
        refunds = LedgerEntry.objects.filter(job_id=job_id, kind="refund").count()
        if completed.result():
            assert job.status == "completed" and refunds == 0
            assert cancel.result().status_code in {400, 409}
            assert cancel.result().json()["error"] in {"Bad Request", "Conflict"}
        else:
            assert job.status == "cancelled" and refunds == 1
            assert cancel.result().status_code == 200
    statuses = Job.objects.filter(id__in=job_ids).values_list("status", flat=True)
    assert alice.balance() == 1000 - 10 * sum(status == "completed" for status in statuses)
