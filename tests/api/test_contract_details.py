"""Contract details clients trip on: the documented `all` filters, 429s that say which limit,
and a job that echoes what was asked."""

import pytest

from tests.conftest import ESMFOLD_JOB, parallel

pytestmark = pytest.mark.django_db(transaction=True)


def test_all_and_empty_filters_list_everything(alice):
    job_id = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    for params in ({"status": "all"}, {"model": "all"}, {"status": "", "model": ""}, {}):
        listed = alice.get("/v1/jobs", params=params)
        assert listed.status_code == 200, (params, listed.text)
        assert [job["job_id"] for job in listed.json()["jobs"]] == [job_id]
    assert alice.get("/v1/jobs", params={"status": "pending"}).json()["pagination"]["total"] == 1
    assert alice.get("/v1/jobs", params={"status": "sometimes"}).status_code == 400


def test_each_429_names_its_reason(make_client, settings):
    limited = make_client(rate_limit=2)
    answers = [limited.get("/v1/account") for _ in range(3)]
    assert answers[-1].status_code == 429
    assert answers[-1].json()["reason"] == "rate_limit"
    assert int(answers[-1].headers["Retry-After"]) >= 1

    busy = make_client(max_active_jobs=1)
    assert busy.post("/v1/predict", json=ESMFOLD_JOB).status_code == 200
    refused = busy.post("/v1/predict", json=ESMFOLD_JOB)
    assert refused.status_code == 429
    assert refused.json()["reason"] == "active_jobs"

    settings.PHONOS_QUEUE_CAPACITY = 1
    full = make_client().post("/v1/predict", json=ESMFOLD_JOB)
    assert full.status_code == 429
    assert full.json()["reason"] == "queue_full"
    assert set(full.json()) == {"error", "message", "reason"}


def test_a_job_echoes_its_sequence_and_params(alice):
    body = {**ESMFOLD_JOB, "params": {"num_recycles": 3}}
    job_id = alice.post("/v1/predict", json=body).json()["job_id"]
    job = alice.get(f"/v1/jobs/{job_id}").json()
    assert job["sequence"] == ESMFOLD_JOB["sequence"]
    assert job["params"]["num_recycles"] == 3
    assert "depends_on" not in job


def test_parallel_rate_limited_requests_all_carry_the_reason(make_client):
    limited = make_client(rate_limit=3)
    answers = parallel([lambda: limited.get("/v1/models") for _ in range(10)], workers=10)
    refused = [answer for answer in answers if answer.status_code == 429]
    assert len(refused) == 7
    assert {answer.json()["reason"] for answer in refused} == {"rate_limit"}
