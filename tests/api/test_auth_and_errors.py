import pytest
import requests

from apps.accounts.services import api_key_revoke
from tests.conftest import ESMFOLD_JOB

pytestmark = pytest.mark.django_db(transaction=True)


def assert_error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    # A 429 also says which limit it was, as a stable word (docs/api.md).
    assert set(body) == ({"error", "message", "reason"} if status == 429 else {"error", "message"})
    assert body["error"] and body["message"]
    return body


def test_health_needs_no_key_and_matches_the_contract(live_server):
    response = requests.get(
        f"{live_server.url}/v1/health", headers={"Authorization": "Bearer nope"}
    )
    assert response.status_code == 200
    assert response.json() == {
        "status": "operational",
        "version": "v1",
        "message": "PHONOS API is running",
    }


def test_models_lists_the_catalog_with_costs(alice):
    models = {model["id"]: model for model in alice.get("/v1/models").json()["models"]}
    assert {key: models[key]["cost_credits"] for key in ("esmfold", "alphafold2", "diffdock")} == {
        "esmfold": 10,
        "alphafold2": 50,
        "diffdock": 30,
    }
    assert models["esmfold"]["type"] == "structure_prediction"
    assert models["diffdock"]["type"] == "docking"
    assert models["esmfold"]["params"]["num_recycles"]["maximum"] == 24


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer pk_short", "Bearer pk_" + "A" * 43, "Token x"],
)
def test_missing_malformed_or_unknown_keys_get_401(live_server, header):
    headers = {"Authorization": header} if header else {}
    response = requests.get(f"{live_server.url}/v1/account", headers=headers)
    body = assert_error(response, 401)
    assert body["error"] == "Unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_key_gets_401(alice):
    assert alice.get("/v1/account").status_code == 200
    api_key_revoke(account=alice.account, key_id=alice.account.api_keys.get().id)
    assert_error(alice.get("/v1/account"), 401)


def test_unknown_paths_and_methods_answer_in_the_envelope(alice):
    assert_error(alice.get("/v1/nothing-here"), 404)
    assert_error(alice.delete("/v1/models"), 405)
    assert_error(alice.get("/v1/predict"), 405)


def test_oversized_bodies_get_413(alice, settings):
    huge = {**ESMFOLD_JOB, "name": "x" * (settings.PHONOS_MAX_REQUEST_BYTES + 10)}
    body = assert_error(alice.post("/v1/predict", json=huge), 413)
    assert "limit" in body["message"]
    assert alice.balance() == 1000


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"sequence": "MKT"}, "model"),
        ({"model": "rosettafold", "sequence": "MKT"}, "model"),
        ({"model": 7, "sequence": "MKT"}, "model"),
        ({"model": "esmfold"}, "sequence"),
        ({"model": "esmfold", "sequence": 42}, "sequence"),
        ({"model": "esmfold", "sequence": "   "}, "sequence"),
        ({"model": "esmfold", "sequence": "MKTB1"}, "sequence"),
        ({"model": "esmfold", "sequence": "M" * 1025}, "sequence"),
        ({"model": "esmfold", "sequence": "MKT", "params": {"num_recycles": 0}}, "num_recycles"),
        ({"model": "esmfold", "sequence": "MKT", "params": {"num_recycles": 25}}, "num_recycles"),
        ({"model": "esmfold", "sequence": "MKT", "params": {"num_recycles": "4"}}, "num_recycles"),
        ({"model": "esmfold", "sequence": "MKT", "params": {"num_recycles": True}}, "num_recycles"),
        ({"model": "esmfold", "sequence": "MKT", "params": {"temperature": 1}}, "temperature"),
        ({"model": "esmfold", "sequence": "MKT", "params": [1]}, "params"),
        ({"model": "esmfold", "sequence": "MKT", "name": ["x"]}, "name"),
        ({"model": "esmfold", "sequence": "MKT", "colour": "red"}, "colour"),
        (
            {"model": "alphafold2", "sequence": "MKT", "params": {"model_preset": "dimer"}},
            "model_preset",
        ),
        (
            {"model": "alphafold2", "sequence": "MKT", "params": {"use_templates": "yes"}},
            "use_templates",
        ),
        ({"model": "diffdock", "sequence": "CCO", "params": {}}, "protein_pdb"),
        (
            {"model": "diffdock", "sequence": "not-a-smiles((", "params": {"protein_pdb": "x"}},
            "sequence",
        ),
    ],
)
def test_invalid_requests_get_400_naming_the_field(alice, payload, field):
    body = assert_error(alice.post("/v1/predict", json=payload), 400)
    assert field in body["message"]
    assert alice.balance() == 1000


@pytest.mark.parametrize("raw", ["{bad json", "[1, 2]", '"a string"', "null"])
def test_malformed_or_non_object_bodies_get_400(alice, raw):
    response = alice.post("/v1/predict", data=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400)


def test_a_non_json_content_type_is_refused_clearly(alice):
    response = alice.post(
        "/v1/predict", data="model=esmfold", headers={"Content-Type": "text/plain"}
    )
    assert_error(response, 415)
