"""The credits a usage record shows are the credits the request charged: a batch its total, an
idempotent replay nothing (it charged nothing)."""

import pytest

from tests.conftest import ESMFOLD_JOB

pytestmark = pytest.mark.django_db(transaction=True)


def predict_usage(client) -> dict:
    usage = client.get("/v1/usage", params={"days": 1}).json()
    return {row["endpoint"]: row for row in usage["by_endpoint"]}


def test_a_replayed_prediction_records_no_credits(alice):
    headers = {"Idempotency-Key": "usage-replay"}
    first = alice.post("/v1/predict", ESMFOLD_JOB, headers=headers)
    replay = alice.post("/v1/predict", ESMFOLD_JOB, headers=headers)
    assert (first.status_code, replay.status_code) == (200, 200)
    assert replay.headers["Idempotent-Replayed"] == "true"
    row = predict_usage(alice)["/v1/predict"]
    assert (row["requests"], row["credits_used"]) == (2, 10)


def test_a_batch_records_what_it_charged(alice):
    jobs = [ESMFOLD_JOB, {**ESMFOLD_JOB, "model": "alphafold2"}, {"model": "esmfold"}]
    response = alice.post("/v1/batch", {"jobs": jobs})
    assert response.status_code == 200, response.text
    assert response.json()["summary"]["total_credits_used"] == 60
    row = predict_usage(alice)["/v1/batch"]
    assert (row["requests"], row["credits_used"]) == (1, 60)
