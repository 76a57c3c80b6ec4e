"""Fold→dock pipelines over HTTP: checked and charged together, the dock held back until its
fold completes, and failed with a refund when the fold does not."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.billing.models import LedgerEntry
from apps.jobs.models import Job
from apps.jobs.services import job_complete, job_fail, job_start, job_sweep
from tests.api.test_auth_and_errors import assert_error
from tests.api.test_docking_api import PROTEIN_PDB

pytestmark = pytest.mark.django_db(transaction=True)

FOLD = {"model": "esmfold", "sequence": "MGSSHHHHHHSSGLVPRGSHMASMTGGQQMGRGS"}
DOCK = {"model": "vina", "params": {"ligand_smiles": "CCO"}}
PIPELINE = {"name": "fold and dock", "fold": FOLD, "dock": DOCK}


def submit(client, body=PIPELINE, **kwargs):
    return client.post("/v1/pipelines", json=body, **kwargs)


def test_a_pipeline_charges_both_jobs_and_holds_the_dock_back(alice):
    response = submit(alice)
    assert response.status_code == 200, response.text
    body = response.json()
    fold_id, dock_id = body["pipeline"]["fold_job_id"], body["pipeline"]["dock_job_id"]
    assert body["success"] is True
    assert body["credits_used"] == 15
    assert [job["job_id"] for job in body["jobs"]] == [fold_id, dock_id]
    assert alice.balance() == 985
    debits = LedgerEntry.objects.filter(account=alice.account, kind="job_debit")
    assert sorted(str(entry.job_id) for entry in debits) == sorted([fold_id, dock_id])

    fold, dock = Job.objects.get(id=fold_id), Job.objects.get(id=dock_id)
    assert fold.enqueued_at is not None
    assert (dock.status, dock.stage, dock.enqueued_at) == (
        "pending",
        "waiting_for_dependency",
        None,
    )
    assert dock.params["protein_job_id"] == fold_id
    detail = alice.get(f"/v1/jobs/{dock_id}").json()
    assert detail["depends_on"] == fold_id
    assert detail["stage"] == "waiting_for_dependency"
    assert "depends_on" not in alice.get(f"/v1/jobs/{fold_id}").json()

    # Long past the republish delay, the sweeper still leaves the waiting dock alone.
    Job.objects.filter(id=dock_id).update(created_at=timezone.now() - timedelta(hours=2))
    assert dock_id not in job_sweep().republished
    assert Job.objects.get(id=dock_id).enqueued_at is None

    job_start(job_id=fold_id)
    assert job_complete(job_id=fold_id, output_file=f"{fold_id}.pdb", summary={}, metadata={})
    dock.refresh_from_db()
    assert (dock.status, dock.stage) == ("pending", "queued")
    assert dock.enqueued_at is not None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"fold": FOLD}, "dock must be an object"),
        ({"dock": DOCK}, "fold must be an object"),
        ({**PIPELINE, "extra": 1}, "extra is not a field"),
        ({**PIPELINE, "fold": {"model": "esmfold", "sequence": "MK1"}}, "fold: "),
        ({**PIPELINE, "fold": DOCK}, "fold: "),
        ({**PIPELINE, "dock": FOLD}, "dock: esmfold is not a docking model"),
        ({**PIPELINE, "dock": {"model": "vina", "params": {"ligand_smiles": "C1CC(("}}}, "dock: "),
        (
            {
                **PIPELINE,
                "dock": {
                    "model": "vina",
                    "params": {"ligand_smiles": "CCO", "protein_pdb": PROTEIN_PDB},
                },
            },
            "dock: params.protein_pdb is not allowed",
        ),
        (
            {
                **PIPELINE,
                "dock": {
                    "model": "vina",
                    "params": {"ligand_smiles": "CCO", "protein_job_id": "x"},
                },
            },
            "dock: params.protein_job_id is not allowed",
        ),
    ],
)
def test_a_bad_pipeline_answers_400_and_charges_nothing(alice, body, fragment):
    assert fragment in assert_error(submit(alice, body), 400)["message"]
    assert alice.balance() == 1000
    assert not Job.objects.filter(account=alice.account).exists()


def test_an_account_that_cannot_afford_both_jobs_gets_402_and_nothing_is_created(make_client):
    tenant = make_client(credits=14)  # the fold alone (10) would fit, both (15) do not
    assert_error(submit(tenant), 402)
    assert tenant.balance() == 14
    assert not Job.objects.filter(account=tenant.account).exists()
    assert not LedgerEntry.objects.filter(account=tenant.account, kind="job_debit").exists()


def test_a_failed_fold_fails_and_refunds_its_dock(alice):
    pipeline = submit(alice).json()["pipeline"]
    fold_id, dock_id = pipeline["fold_job_id"], pipeline["dock_job_id"]
    job_start(job_id=fold_id)
    assert job_fail(job_id=fold_id, error="out of memory")
    dock = alice.get(f"/v1/jobs/{dock_id}").json()
    assert dock["status"] == "failed"
    assert dock["error"] == f"The fold job {fold_id} failed: out of memory"
    assert dock["credits_refunded"] == 5
    assert alice.balance() == 1000
    assert Job.objects.get(id=dock_id).enqueued_at is None


def test_cancelling_the_fold_fails_the_dock_and_cancelling_a_waiting_dock_refunds_it(alice):
    first = submit(alice).json()["pipeline"]
    assert alice.post(f"/v1/jobs/{first['fold_job_id']}/cancel").status_code == 200
    dock = alice.get(f"/v1/jobs/{first['dock_job_id']}").json()
    assert dock["status"] == "failed"
    assert "was cancelled" in dock["error"]
    assert alice.balance() == 1000

    second = submit(alice).json()["pipeline"]
    response = alice.post(f"/v1/jobs/{second['dock_job_id']}/cancel")
    assert response.status_code == 200, response.text
    assert alice.balance() == 990
    fold_id = second["fold_job_id"]
    job_start(job_id=fold_id)
    assert job_complete(job_id=fold_id, output_file=f"{fold_id}.pdb", summary={}, metadata={})
    dock = Job.objects.get(id=second["dock_job_id"])
    assert (dock.status, dock.enqueued_at) == ("cancelled", None)


def test_an_idempotency_key_replays_the_pipeline_without_charging_again(alice):
    headers = {"Idempotency-Key": "pipeline-1"}
    first = submit(alice, headers=headers)
    second = submit(alice, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json() == second.json()
    assert alice.balance() == 985
    assert Job.objects.filter(account=alice.account).count() == 2
    assert_error(submit(alice, {**PIPELINE, "name": "other"}, headers=headers), 409)


def test_another_tenant_sees_neither_job_of_a_pipeline(alice, charlie):
    pipeline = submit(alice).json()["pipeline"]
    for job_id in pipeline.values():
        assert_error(charlie.get(f"/v1/jobs/{job_id}"), 404)
        assert_error(charlie.post(f"/v1/jobs/{job_id}/cancel"), 404)
