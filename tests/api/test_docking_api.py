"""Docking submissions over HTTP: the Vina model in the catalog, its checks, and docking
against an earlier structure prediction (`params.protein_job_id`), tenant by tenant."""

from pathlib import Path

import posebusters
import pytest
from rdkit import Chem

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


POSEBUSTERS = Path(posebusters.__file__).parent / "datasets" / "pdb"
ETHANOL_MOL2 = (Path(__file__).parents[1] / "data" / "ethanol.mol2").read_text()
# MOL2 without hydrogens reads as radicals: refused rather than docked as wrong chemistry.
ETHANOL_WITHOUT_HYDROGENS = """@<TRIPOS>MOLECULE
ethanol
 3 2 0 0 0
SMALL
NO_CHARGES

@<TRIPOS>ATOM
      1 C1          0.0000    0.0000    0.0000 C.3     1  LIG1        0.0000
      2 C2          1.5200    0.0000    0.0000 C.3     1  LIG1        0.0000
      3 O1          2.0300    1.3400    0.0000 O.3     1  LIG1        0.0000
@<TRIPOS>BOND
     1     1     2    1
     2     2     3    1
"""


def posebusters_files(name: str) -> tuple[str, str]:
    folder = POSEBUSTERS / name
    return (
        (folder / f"{name}_protein_one_lig_removed.pdb").read_text(),
        (folder / f"{name}_ligand.sdf").read_text(),
    )


def docking(client, model: str = "vina", **params):
    return client.post("/v1/predict", json={"model": model, "params": params})


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"ph": 15}, "params.ph"),
        ({"scoring": "dock6"}, "params.scoring"),
        ({"keep_hetero": "yes"}, "params.keep_hetero"),
        ({"keep_hetero": 1}, "params.keep_hetero"),
        ({"keep_hetero": "cofactor"}, "params.keep_hetero"),
        ({"pocket_margin": 30}, "params.pocket_margin"),
        ({"pocket_residues": ["A45"]}, "params.pocket_residues"),
        ({"pocket_residues": ["A:999"]}, "params.pocket_residues"),
        ({"pocket_residues": [45]}, "params.pocket_residues"),
        ({"pocket_residues": []}, "params.pocket_residues"),
        ({"pocket_ligand_sdf": "not a molecule"}, "params.pocket_ligand_sdf"),
        ({"pocket_residues": ["A:5"], "center_x": 1, "center_y": 2, "center_z": 3}, "pocket"),
        ({"ligand_sdf": "garbage\n\n"}, "params.ligand_sdf"),
        ({"ligand_mol2": ETHANOL_WITHOUT_HYDROGENS}, "params.ligand_mol2"),
        ({"ligand_mol2": "x" * 100_001}, "params.ligand_mol2"),
        ({"ligand_mol2": ETHANOL_MOL2, "ligand_smiles": "CCO"}, "not both"),
    ],
)
def test_bad_docking_params_answer_400(alice, params, field):
    file_given = "ligand_sdf" in params or "ligand_mol2" in params
    ligand = {} if file_given else {"ligand_smiles": "CCO"}
    response = docking(alice, protein_pdb=PROTEIN_PDB, **ligand, **params)
    assert field in assert_error(response, 400)["message"]
    assert alice.balance() == 1000


def test_a_2d_pocket_ligand_is_refused(alice):
    flat = Chem.MolToMolBlock(Chem.MolFromSmiles("c1ccccc1O"))
    response = vina(alice, protein_pdb=PROTEIN_PDB, pocket_ligand_sdf=flat)
    assert "no 3D coordinates" in assert_error(response, 400)["message"]


@pytest.mark.parametrize("model", ["vina", "diffdock"])
def test_ligands_as_sdf_or_mol2_are_stored_with_their_smiles(alice, model):
    protein, crystal = posebusters_files("1uou")
    from_sdf = docking(alice, model, protein_pdb=PROTEIN_PDB, ligand_sdf=crystal)
    assert from_sdf.status_code == 200, from_sdf.text
    job = Job.objects.get(id=from_sdf.json()["job_id"])
    assert Chem.CanonSmiles(job.sequence) == Chem.CanonSmiles(
        Chem.MolToSmiles(Chem.MolFromMolBlock(crystal))
    )
    assert "ligand_smiles" not in job.params
    from_mol2 = docking(alice, model, protein_pdb=PROTEIN_PDB, ligand_mol2=ETHANOL_MOL2)
    assert from_mol2.status_code == 200, from_mol2.text
    assert Job.objects.get(id=from_mol2.json()["job_id"]).sequence == "CCO"


def test_vina_takes_a_large_receptor_with_a_pocket_and_diffdock_does_not(alice):
    protein, crystal = posebusters_files("1of6")  # 2,770 residues; the limit is 2,000
    accepted = docking(alice, ligand_smiles="CCO", protein_pdb=protein, pocket_ligand_sdf=crystal)
    assert accepted.status_code == 200, accepted.text
    refused = docking(alice, "diffdock", ligand_smiles="CCO", protein_pdb=protein)
    assert "accepts at most 2000" in assert_error(refused, 400)["message"]


def test_pocket_residues_and_defaults_are_kept(alice):
    response = vina(alice, protein_pdb=PROTEIN_PDB, pocket_residues="A:5, A:9")
    assert response.status_code == 200, response.text
    params = Job.objects.get(id=response.json()["job_id"]).params
    assert params["pocket_residues"] == ["A:5", "A:9"]
    assert (params["ph"], params["scoring"], params["keep_hetero"]) == (7.4, "vina", "cofactors")


@pytest.mark.parametrize(
    ("given", "stored"),
    [("none", "none"), ("cofactors", "cofactors"), ("all", "all"), (True, "all"), (False, "none")],
)
def test_keep_hetero_takes_its_modes_and_the_older_booleans(alice, given, stored):
    response = vina(alice, protein_pdb=PROTEIN_PDB, keep_hetero=given)
    assert response.status_code == 200, response.text
    assert Job.objects.get(id=response.json()["job_id"]).params["keep_hetero"] == stored


def test_keep_hetero_is_described_in_the_models_list_and_the_openapi_schema(alice):
    models = {model["id"]: model for model in alice.get("/v1/models").json()["models"]}
    rule = models["vina"]["params"]["keep_hetero"]
    assert (rule["type"], rule["default"], rule["choices"]) == (
        "str",
        "cofactors",
        ["none", "cofactors", "all"],
    )
    assert rule["aliases"] == [{"value": True, "means": "all"}, {"value": False, "means": "none"}]
    assert "metal ions" in rule["description"]
    schema = models["vina"]["params_schema"]["properties"]["keep_hetero"]
    assert schema["default"] == "cofactors"
    assert schema["anyOf"] == [
        {"type": "string", "enum": ["none", "cofactors", "all"]},
        {"type": "boolean", "enum": [True]},
        {"type": "boolean", "enum": [False]},
    ]
    message = assert_error(vina(alice, protein_pdb=PROTEIN_PDB, keep_hetero=1), 400)["message"]
    assert message == (
        "params.keep_hetero must be one of: none, cofactors, all; or true (all), false (none)"
    )
