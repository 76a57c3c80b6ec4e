"""Docking submissions over HTTP: the Vina model in the catalog, its checks, and docking
against an earlier structure prediction (`params.protein_job_id`), tenant by tenant."""

from pathlib import Path

import pytest

from apps.jobs.models import Job
from apps.jobs.services import job_complete, job_start
from tests.api.test_auth_and_errors import assert_error
from tests.conftest import ESMFOLD_JOB

pytestmark = pytest.mark.django_db(transaction=True)

PROTEIN_PDB = (Path(__file__).parents[1] / "data" / "helix_hairpin.pdb").read_text()


def vina(client, **params):
    return client.post(
        "/v1/predict",
        json={"model": "vina", "params": {"ligand_smiles": "CCO", **params}},
    )


def completed_fold_job(client) -> str:
    job_id = client.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    job_start(job_id=job_id)
    job_complete(job_id=job_id, output_file=f"{job_id}.pdb", summary={}, metadata={})
    return job_id


def test_vina_is_in_the_catalog(alice):
    models = {model["id"]: model for model in alice.get("/v1/models").json()["models"]}
    assert models["vina"]["type"] == "docking"
    assert models["vina"]["cost_credits"] == 5


def test_a_vina_job_keeps_its_box_and_search_settings(alice):
    response = vina(
        alice,
        protein_pdb=PROTEIN_PDB,
        center_x=17,
        center_y=-4.5,
        center_z=7.25,
        size_x=20,
        size_y=20,
        size_z=20,
        exhaustiveness=4,
    )
    assert response.status_code == 200, response.text
    assert response.json()["credits_used"] == 5
    params = Job.objects.get(id=response.json()["job_id"]).params
    assert (params["center_x"], params["center_y"], params["center_z"]) == (17.0, -4.5, 7.25)
    assert (params["exhaustiveness"], params["num_poses"]) == (4, 9)
    assert params["ligand_smiles"] == "CCO"
    assert alice.balance() == 995


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"protein_pdb": PROTEIN_PDB, "ligand_smiles": "C1CC(("}, "params.ligand_smiles"),
        ({"protein_pdb": "REMARK no atoms\nEND\n"}, "params.protein_pdb"),
        ({}, "params.protein_pdb"),
        ({"protein_pdb": PROTEIN_PDB, "exhaustiveness": 33}, "params.exhaustiveness"),
        ({"protein_pdb": PROTEIN_PDB, "num_poses": 0}, "params.num_poses"),
        ({"protein_pdb": PROTEIN_PDB, "size_x": "big"}, "params.size_x"),
        ({"protein_pdb": PROTEIN_PDB, "center_x": 1.0}, "params.center_x"),
        ({"protein_job_id": "not-a-uuid"}, "params.protein_job_id"),
    ],
)
def test_bad_vina_requests_answer_400_naming_the_field(alice, params, field):
    assert field in assert_error(vina(alice, **params), 400)["message"]
    assert alice.balance() == 1000


def test_protein_pdb_and_protein_job_id_exclude_each_other(alice):
    fold_id = completed_fold_job(alice)
    response = vina(alice, protein_pdb=PROTEIN_PDB, protein_job_id=fold_id)
    assert "not both" in assert_error(response, 400)["message"]


@pytest.mark.parametrize("model", ["vina", "diffdock"])
def test_docking_takes_the_protein_of_a_completed_fold_job(alice, model):
    fold_id = completed_fold_job(alice)
    response = alice.post(
        "/v1/predict",
        json={"model": model, "sequence": "CCO", "params": {"protein_job_id": fold_id}},
    )
    assert response.status_code == 200, response.text
    assert Job.objects.get(id=response.json()["job_id"]).params["protein_job_id"] == fold_id


def test_another_tenants_or_a_missing_fold_job_answers_400(alice, charlie):
    charlies_fold = completed_fold_job(charlie)
    foreign = assert_error(vina(alice, protein_job_id=charlies_fold), 400)
    missing = assert_error(vina(alice, protein_job_id="7d0c2a4e-7a55-4f57-9a53-7ad3c9e4b1d2"), 400)
    assert "params.protein_job_id" in foreign["message"]
    # Another tenant's job reads exactly like one that does not exist.
    assert foreign["message"].replace(charlies_fold, "X") == missing["message"].replace(
        "7d0c2a4e-7a55-4f57-9a53-7ad3c9e4b1d2", "X"
    )
    assert alice.balance() == 1000


def test_an_unfinished_or_non_fold_job_cannot_give_the_protein(alice):
    pending = alice.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    message = assert_error(vina(alice, protein_job_id=pending), 400)["message"]
    assert "params.protein_job_id" in message and "pending" in message
    docking = vina(alice, protein_pdb=PROTEIN_PDB).json()["job_id"]
    message = assert_error(vina(alice, protein_job_id=docking), 400)["message"]
    assert "no structure prediction job" in message
