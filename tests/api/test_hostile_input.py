"""Inputs that schemathesis (tests/api/test_openapi.py) or probing around it once turned into a
500: each now gets a 4xx in the error envelope, or the answer the schema promises."""

import pytest

from apps.jobs.models import Job
from apps.jobs.services import job_complete, job_start
from apps.jobs.storage import get_storage
from tests.api.test_auth_and_errors import assert_error
from tests.conftest import ESMFOLD_JOB

pytestmark = pytest.mark.django_db(transaction=True)

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/predict", '{"model": "esmfold", "sequence": "MKT", "name": "a\\u0000b"}', {}),
        ("/v1/predict", '{"model": "esmfold", "sequence": "MKT", "name": "\\ud800"}', {}),
        ("/v1/predict", '{"model": "esmfold", "sequence": "MKT", "\\ud800": 1}', {}),
        ("/v1/validate", '{"model": "esmfold", "sequence": "MKT", "\\ud800": 1}', {}),
        (
            "/v1/batch",
            '{"jobs": [{"model": "esmfold", "sequence": "MKT", "\\u0000": 1}]}',
            {"Idempotency-Key": "nul-in-an-item"},
        ),
        ("/v1/predict", "[" * 5000 + "]" * 5000, {}),
    ],
    ids=["nul", "unpaired-surrogate", "surrogate-key", "validate", "batch-replay", "deep"],
)
def test_json_that_cannot_be_stored_or_echoed_is_refused(alice, path, body, headers):
    response = alice.post(path, data=body.encode(), headers={**JSON, **headers})
    assert "Malformed request body" in assert_error(response, 400)["message"]
    assert Job.objects.filter(account=alice.account).count() == 0
    assert alice.balance() == 1000


@pytest.mark.parametrize("model", [{}, [], ["esmfold"], 7, None])
def test_validate_answers_for_any_json_value_as_model(alice, model):
    response = alice.post("/v1/validate", json={"model": model, "sequence": "MKT"})
    assert response.status_code == 200, response.text
    assert response.json()["valid"] is False
    assert response.json()["model"] is None


def test_job_list_offsets_stay_within_what_sql_can_take(alice):
    assert_error(alice.get("/v1/jobs", params={"offset": 10**20}), 400)
    assert alice.get("/v1/jobs", params={"offset": 10**9}).json()["jobs"] == []


def test_an_accept_header_naming_the_file_type_gets_the_file(alice, tmp_path):
    job_id = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    job = job_start(job_id=job_id)
    pdb = tmp_path / "out.pdb"
    pdb.write_text("ATOM      1  CA  MET A   1       0.000   0.000   0.000  1.00 87.50  C\n")
    get_storage().put_file(f"accounts/{job.account_id}/jobs/{job_id}/{job_id}.pdb", pdb, "")
    job_complete(job_id=job_id, output_file=f"{job_id}.pdb", summary={}, metadata={})

    download = alice.get(f"/v1/jobs/{job_id}/download", headers={"Accept": "chemical/x-pdb"})
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "chemical/x-pdb"
    assert download.content == pdb.read_bytes()
    missing = alice.get(f"/v1/jobs/{job_id}x/download", headers={"Accept": "chemical/x-pdb"})
    assert_error(missing, 404)
    assert missing.headers["Content-Type"] == "application/json"
    models = alice.get("/v1/models", headers={"Accept": "text/html"})
    assert models.status_code == 200 and models.headers["Content-Type"] == "application/json"
