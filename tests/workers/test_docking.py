"""Docking through real processes: AutoDock Vina in a real worker (S3 outputs, results over
HTTP), a docking job on top of a tiny-ESMFold job, and the DiffDock runner against its
command-line contract (a stand-in installation, see fake_diffdock)."""

import io
import sys
import time
import zipfile
from pathlib import Path

import gemmi
import pytest
from rdkit import Chem

from tests.workers.fake_diffdock import fake_diffdock
from workers.runners import JobInputs, RunnerError
from workers.runners.diffdock import DiffDockRunner

PROTEIN_PDB = (Path(__file__).parents[1] / "data" / "helix_hairpin.pdb").read_text()
LIGAND = "Oc1ccc2ccccc2c1"  # 2-naphthol
FAST_VINA = {"exhaustiveness": 2, "num_poses": 3, "seed": 11}


def wait_for_status(client, job_id: str, statuses: set[str], timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never reached {statuses}: {body}")


def sdf_poses(text: str) -> list[Chem.Mol]:
    supplier = Chem.SDMolSupplier()
    supplier.SetData(text, removeHs=False)
    return [molecule for molecule in supplier]


def assert_complex(pdb_text: str, *, ligand_heavy_atoms: int) -> None:
    structure = gemmi.read_pdb_string(pdb_text)
    residues = [residue for chain in structure[0] for residue in chain]
    protein = [residue for residue in residues if residue.het_flag == "A"]
    ligand = [residue for residue in residues if residue.name == "LIG"]
    assert len(protein) == 30
    assert len(ligand) == 1
    heavy = [atom for atom in ligand[0] if atom.element.name != "H"]
    assert len(heavy) == ligand_heavy_atoms


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_vina_docks_a_ligand_end_to_end(alice, charlie, start_worker, s3_storage):
    start_worker(queues="vina", **s3_storage)
    submitted = alice.post(
        "/v1/predict",
        json={
            "model": "vina",
            "sequence": LIGAND,
            "name": "naphthol",
            "params": {"protein_pdb": PROTEIN_PDB, **FAST_VINA},
        },
    )
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["credits_used"] == 5
    job_id = submitted.json()["job_id"]
    job = wait_for_status(alice, job_id, {"completed", "failed"})
    assert job["status"] == "completed", job["error"]

    results = alice.get(f"/v1/jobs/{job_id}/results").json()
    summary = results["summary"]
    assert [sample["rank"] for sample in summary["samples"]] == [1, 2, 3]
    affinities = [sample["affinity_kcal_mol"] for sample in summary["samples"]]
    assert all(value < 0 for value in affinities)
    assert affinities == sorted(affinities)
    assert summary["best_sample"] == 0
    assert set(results["files"]) >= {f"{job_id}.pdb", "poses.sdf", "confidence.json"}

    archive = zipfile.ZipFile(io.BytesIO(alice.get(f"/v1/jobs/{job_id}/results/archive").content))
    poses_sdf = archive.read(f"{job_id}/poses.sdf").decode()
    poses = sdf_poses(poses_sdf)
    assert len(poses) == 3
    assert [float(pose.GetProp("affinity_kcal_mol")) for pose in poses] == affinities
    assert all(Chem.MolToSmiles(Chem.RemoveHs(pose)) == Chem.CanonSmiles(LIGAND) for pose in poses)

    download = alice.get(job["download_url"])
    assert download.status_code == 200
    assert_complex(download.text, ligand_heavy_atoms=11)
    assert charlie.get(f"/v1/jobs/{job_id}/results").status_code == 404
    assert alice.balance() == 995


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_vina_docks_into_a_completed_esmfold_job(alice, start_worker, s3_storage, tiny_esmfold):
    start_worker(queues="esmfold,vina", PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold), **s3_storage)
    fold_id = alice.post(
        "/v1/predict", json={"model": "esmfold", "sequence": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"}
    ).json()["job_id"]
    assert wait_for_status(alice, fold_id, {"completed", "failed"})["status"] == "completed"

    submitted = alice.post(
        "/v1/predict",
        json={
            "model": "vina",
            "params": {"protein_job_id": fold_id, "ligand_smiles": "CCO", **FAST_VINA},
        },
    )
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["job_id"]
    job = wait_for_status(alice, job_id, {"completed", "failed"})
    assert job["status"] == "completed", job["error"]
    structure = gemmi.read_pdb_string(alice.get(job["download_url"]).text)
    names = [residue.name for chain in structure[0] for residue in chain]
    assert names.count("LIG") == 1 and len(names) == 34


def diffdock_job(client) -> str:
    response = client.post(
        "/v1/predict",
        json={
            "model": "diffdock",
            "sequence": LIGAND,
            "params": {"protein_pdb": PROTEIN_PDB, "inference_steps": 12, "samples_per_complex": 4},
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_diffdock_runs_through_its_command_line(alice, start_worker, s3_storage, tmp_path):
    installation = fake_diffdock(tmp_path / "DiffDock")
    start_worker(
        queues="diffdock",
        PHONOS_DIFFDOCK_DIR=str(installation),
        PHONOS_DIFFDOCK_PYTHON=sys.executable,
        **s3_storage,
    )
    job_id = diffdock_job(alice)
    job = wait_for_status(alice, job_id, {"completed", "failed"})
    assert job["status"] == "completed", job["error"]

    results = alice.get(f"/v1/jobs/{job_id}/results").json()
    samples = results["summary"]["samples"]
    assert [sample["rank"] for sample in samples] == [1, 2, 3, 4]
    assert [sample["confidence"] for sample in samples] == [0.25, 0.0, -0.25, -0.5]
    assert "rank1_confidence0.25.sdf" in results["files"]
    assert "diffdock.log" in results["files"]
    assert_complex(alice.get(job["download_url"]).text, ligand_heavy_atoms=11)
    assert alice.balance() == 970


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_diffdock_failing_fails_the_job_with_its_stderr_and_refunds(
    alice, start_worker, s3_storage, tmp_path
):
    installation = fake_diffdock(
        tmp_path / "DiffDock", fail_with="torch.OutOfMemoryError: CUDA out of memory"
    )
    start_worker(
        queues="diffdock",
        PHONOS_DIFFDOCK_DIR=str(installation),
        PHONOS_DIFFDOCK_PYTHON=sys.executable,
        **s3_storage,
    )
    job_id = diffdock_job(alice)
    job = wait_for_status(alice, job_id, {"completed", "failed"})
    assert job["status"] == "failed", job
    assert "DiffDock exited with status 1" in job["error"]
    assert "CUDA out of memory" in job["error"]
    assert alice.balance() == 1000


def test_diffdock_runner_reads_the_yaml_it_writes_and_ranks_poses(tmp_path):
    runner = DiffDockRunner(
        diffdock_dir=str(fake_diffdock(tmp_path / "DiffDock")), python=sys.executable
    )
    stages = []
    result = runner.run(
        inputs=JobInputs(
            sequence=LIGAND,
            name="pose",
            params={"protein_pdb": PROTEIN_PDB, "inference_steps": 13, "samples_per_complex": 3},
        ),
        workdir=tmp_path / "work",
        progress=lambda stage, fraction: stages.append(stage),
    )
    assert stages == ["inference", "writing_outputs"]
    # The YAML is applied after the flags: the runner's own copy carries the job's settings.
    assert "steps=13 samples=3" in (tmp_path / "work" / "diffdock.log").read_text()
    assert result.primary_file == "pose_complex.pdb"
    poses = sdf_poses((tmp_path / "work" / "poses.sdf").read_text())
    assert [pose.GetProp("confidence") for pose in poses] == ["0.25", "0.00", "-0.25"]
    centre = gemmi.read_pdb_string(PROTEIN_PDB)[0].calculate_center_of_mass()
    placed = poses[0].GetConformer().GetPositions().mean(axis=0)
    assert abs(placed[0] - centre.x) < 3 and abs(placed[1] - centre.y) < 3


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"protein_pdb": PROTEIN_PDB, "ligand_smiles": "C1CC"}, "not a valid SMILES"),
        ({"protein_pdb": "REMARK nothing here\nEND\n"}, "no atoms"),
    ],
)
def test_diffdock_runner_refuses_bad_inputs(tmp_path, params, message):
    runner = DiffDockRunner(
        diffdock_dir=str(fake_diffdock(tmp_path / "DiffDock")), python=sys.executable
    )
    with pytest.raises(RunnerError, match=message):
        runner.run(
            inputs=JobInputs(sequence="CCO", name="x", params=params),
            workdir=tmp_path / "work",
            progress=lambda stage, fraction: None,
        )


def test_a_missing_diffdock_installation_names_the_settings(tmp_path):
    with pytest.raises(RunnerError, match="PHONOS_DIFFDOCK_DIR.*PHONOS_DIFFDOCK_PYTHON"):
        DiffDockRunner().load()
    with pytest.raises(RunnerError, match="not a DiffDock checkout"):
        DiffDockRunner(diffdock_dir=str(tmp_path)).load()
