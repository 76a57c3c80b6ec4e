"""Docking through real processes: AutoDock Vina in a real worker (S3 outputs, results over
HTTP), a docking job on top of a tiny-ESMFold job, and the DiffDock runner against its
command-line contract (a stand-in installation, see fake_diffdock)."""

import io
import sys
import time
import zipfile
from pathlib import Path

import gemmi
import posebusters
import pytest
from rdkit import Chem

from tests.workers.fake_diffdock import fake_diffdock
from workers.runners import JobInputs, RunnerError
from workers.runners.diffdock import DiffDockRunner
from workers.runners.vina import VinaRunner

PROTEIN_PDB = (Path(__file__).parents[1] / "data" / "helix_hairpin.pdb").read_text()
LIGAND = "Oc1ccc2ccccc2c1"  # 2-naphthol
FAST_VINA = {"exhaustiveness": 2, "num_poses": 3, "seed": 11, "ranking": "score"}


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


POSEBUSTERS = Path(posebusters.__file__).parent / "datasets" / "pdb"
ETHANOL_MOL2 = (Path(__file__).parents[1] / "data" / "ethanol.mol2").read_text()
QUICK = {"exhaustiveness": 1, "num_poses": 3, "seed": 3}


def complex_files(name: str) -> tuple[str, str]:
    folder = POSEBUSTERS / name
    return (
        (folder / f"{name}_protein_one_lig_removed.pdb").read_text(),
        (folder / f"{name}_ligand.sdf").read_text(),
    )


def run_vina(tmp_path: Path, params: dict, sequence: str = "", **options):
    return VinaRunner(**options).run(
        inputs=JobInputs(sequence=sequence, name="dock", params={**QUICK, **params}),
        workdir=tmp_path / "work",
        progress=lambda stage, fraction: None,
    )


class NetworkUse:
    """Records every outgoing connection attempt of this process (Python's audit events): a
    receptor preparation must never download a residue template."""

    def __init__(self) -> None:
        self.active = False
        self.attempts: list[tuple] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if self.active and event in {"socket.connect", "socket.getaddrinfo", "urllib.Request"}:
            self.attempts.append((event, args))


NETWORK = NetworkUse()


@pytest.mark.slow
def test_1ia1s_nadph_is_kept_by_default_with_a_local_template_and_no_download(tmp_path):
    protein, crystal = complex_files("1ia1")
    NETWORK.active = True
    try:
        result = run_vina(
            tmp_path,
            {
                "protein_pdb": protein,
                "ligand_smiles": "Nc1nc(N)c2c(Sc3ccccc3)cccc2n1",
                "pocket_ligand_sdf": crystal,
            },
        )
    finally:
        NETWORK.active = False
    assert NETWORK.attempts == []
    receptor = result.summary["receptor"]
    # NADPH is a cofactor: keep_hetero's default ("cofactors") keeps it.
    assert receptor["kept_hetero"] == ["B:195 NDP"]
    assert not any("NDP" in item["residue"] for item in receptor["dropped"])
    pdbqt = (tmp_path / "work" / "receptor.pdbqt").read_text()
    assert sum(1 for line in pdbqt.splitlines() if line[17:20] == "NDP") >= 48
    # The box is the crystal ligand's bounding box plus 5 Å on each side.
    positions = Chem.MolFromMolBlock(crystal).GetConformer().GetPositions()
    box = result.metadata["params"]["box"]
    expected = positions.max(axis=0) - positions.min(axis=0) + 10
    assert box["size"] == pytest.approx(expected.tolist(), abs=1e-3)


@pytest.mark.slow
def test_keep_hetero_none_drops_the_cofactor_and_says_why(tmp_path):
    protein, _crystal = complex_files("1ia1")
    result = run_vina(
        tmp_path,
        {
            "protein_pdb": protein,
            "ligand_smiles": "Nc1nc(N)c2c(Sc3ccccc3)cccc2n1",
            "pocket_residues": ["B:31", "B:62", "B:112"],
            "keep_hetero": "none",
        },
    )
    receptor = result.summary["receptor"]
    assert receptor["kept_hetero"] == []
    assert {"residue": "B:195 NDP", "reason": "hetero residue (keep_hetero is none)"} in (
        receptor["dropped"]
    )
    assert not any(line[17:20] == "NDP" for line in receptor_lines(tmp_path))
    assert receptor["crop"]["residues_before"] == 384
    assert 0 < receptor["crop"]["residues_kept"] < 384
    residues = gemmi.read_pdb_string(protein)[0]
    pocket = [residues["B"][str(number)][0] for number in (31, 62, 112)]
    centre = [
        (
            min(atom.pos.tolist()[axis] for r in pocket for atom in r)
            + max(atom.pos.tolist()[axis] for r in pocket for atom in r)
        )
        / 2
        for axis in range(3)
    ]
    assert result.metadata["params"]["box"]["center"] == pytest.approx(centre, abs=1e-3)


def receptor_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "work" / "receptor.pdbqt").read_text().splitlines()


NOT_A_COFACTOR = "not a cofactor or metal (keep_hetero is cofactors)"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("keep_hetero", "kept", "dropped"),
    [
        # The default: chain A's NADPH stays, its inhibitor TQ3 (a ligand left in the file) goes.
        (None, ["A:193 NDP"], {"A:194 TQ3": NOT_A_COFACTOR}),
        ("all", ["A:193 NDP", "A:194 TQ3"], {}),
        # Older clients' booleans: true is "all", false is "none".
        (True, ["A:193 NDP", "A:194 TQ3"], {}),
        (
            False,
            [],
            {
                "A:193 NDP": "hetero residue (keep_hetero is none)",
                "A:194 TQ3": "hetero residue (keep_hetero is none)",
            },
        ),
    ],
)
def test_keep_hetero_keeps_cofactors_not_a_left_in_ligand(tmp_path, keep_hetero, kept, dropped):
    protein, _crystal = complex_files("1ia1")
    # The box around chain A's inhibitor, which the file still holds, next to its NADPH.
    params = {
        "protein_pdb": protein,
        "ligand_smiles": "Nc1nc(N)c2c(Sc3ccccc3)cccc2n1",
        "pocket_residues": ["A:194"],
        "num_poses": 1,
    }
    if keep_hetero is not None:
        params["keep_hetero"] = keep_hetero
    receptor = run_vina(tmp_path, params).summary["receptor"]
    assert receptor["kept_hetero"] == kept
    hetero = {
        item["residue"]: item["reason"]
        for item in receptor["dropped"]
        if item["residue"].split()[1] in {"NDP", "TQ3"}
    }
    assert hetero == dropped
    in_receptor = {line[17:20] for line in receptor_lines(tmp_path)}
    assert {"NDP", "TQ3"} & in_receptor == {name.split()[1] for name in kept}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_1of6_is_cropped_to_its_pocket_and_docks_through_the_api(alice, start_worker, s3_storage):
    protein, crystal = complex_files("1of6")
    start_worker(queues="vina", **s3_storage)
    submitted = alice.post(
        "/v1/predict",
        json={
            "model": "vina",
            "params": {
                "protein_pdb": protein,
                "ligand_sdf": crystal,
                "pocket_ligand_sdf": crystal,
                **QUICK,
            },
        },
    )
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["job_id"]
    job = wait_for_status(alice, job_id, {"completed", "failed"})
    assert job["status"] == "completed", job["error"]
    summary = alice.get(f"/v1/jobs/{job_id}/results").json()["summary"]
    crop = summary["receptor"]["crop"]
    assert crop["residues_before"] == 2770
    assert crop["residues_kept"] < 400
    assert crop["residues_cropped"] == 2770 - crop["residues_kept"]
    assert summary["ligand"]["source"] == "sdf"
    assert summary["warnings"] == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_cropped_receptor_over_the_limit_fails_and_refunds(alice, start_worker, s3_storage):
    protein, crystal = complex_files("1of6")
    start_worker(queues="vina", PHONOS_MAX_LENGTH_VINA="50", **s3_storage)
    submitted = alice.post(
        "/v1/predict",
        json={
            "model": "vina",
            "params": {
                "protein_pdb": protein,
                "ligand_smiles": "CCO",
                "pocket_ligand_sdf": crystal,
            },
        },
    )
    # The API's limit (2,000 in the test settings) is not the worker's: only the worker crops.
    assert submitted.status_code == 200, submitted.text
    job = wait_for_status(alice, submitted.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "failed"
    assert "within 10 Å of the box" in job["error"] and "at most 50" in job["error"]
    assert alice.balance() == 1000


@pytest.mark.slow
def test_mol2_and_sdf_ligands_dock_with_their_own_chemistry(tmp_path):
    from_mol2 = run_vina(
        tmp_path / "mol2", {"protein_pdb": PROTEIN_PDB, "ligand_mol2": ETHANOL_MOL2}
    )
    assert from_mol2.summary["ligand"]["source"] == "mol2"
    assert from_mol2.summary["ligand"]["smiles"] == "CCO"
    # The file has hydrogens: its protonation is the user's.
    assert any("protonation was kept" in warning for warning in from_mol2.summary["warnings"])
    _protein, crystal = complex_files("1uou")
    from_sdf = run_vina(tmp_path / "sdf", {"protein_pdb": PROTEIN_PDB, "ligand_sdf": crystal})
    assert from_sdf.summary["ligand"]["source"] == "sdf"
    poses = sdf_poses((tmp_path / "sdf" / "work" / "poses.sdf").read_text())
    assert poses[0].GetNumHeavyAtoms() == Chem.MolFromMolBlock(crystal).GetNumHeavyAtoms()


@pytest.mark.slow
def test_an_undefined_stereocentre_is_warned_and_a_defined_one_is_not(tmp_path):
    racemic = run_vina(
        tmp_path / "a", {"protein_pdb": PROTEIN_PDB, "ligand_smiles": "CC(N)CC(=O)O"}
    )
    assert any("undefined stereocentre" in warning for warning in racemic.summary["warnings"])
    # pH 7.4: the amine protonated, the acid deprotonated.
    protonated = racemic.summary["ligand"]["protonated_smiles"]
    assert "[NH3+]" in protonated and "[O-]" in protonated
    chiral = run_vina(
        tmp_path / "b", {"protein_pdb": PROTEIN_PDB, "ligand_smiles": "C[C@H](N)CC(=O)O"}
    )
    assert chiral.summary["warnings"] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("smiles", "expected"),
    [
        # 1UOU's ligand: the 2-iminopyrrolidine as amidinium; its uracil NHs stay neutral
        # (dimorphite-dl alone also offers them deprotonated).
        ("N=C1CCCN1Cc1[nH]c(=O)[nH]c(=O)c1Cl", "[NH2+]=C1CCCN1Cc1[nH]c(=O)[nH]c(=O)c1Cl"),
        # A guanidine (as arginine's) with a carboxylic acid: guanidinium and carboxylate.
        ("NC(=N)NCCCC(=O)O", "NC(=[NH2+])NCCCC(=O)[O-]"),
        # Benzamidine.
        ("NC(=N)c1ccccc1", "NC(=[NH2+])c1ccccc1"),
    ],
)
def test_amidines_and_guanidines_are_docked_protonated(tmp_path, smiles, expected):
    result = run_vina(
        tmp_path, {"protein_pdb": PROTEIN_PDB, "ligand_smiles": smiles, "num_poses": 1}
    )
    ligand = result.summary["ligand"]
    assert Chem.CanonSmiles(ligand["protonated_smiles"]) == Chem.CanonSmiles(expected)
    assert not any("protonation" in warning for warning in result.summary["warnings"])
    pose = sdf_poses((tmp_path / "work" / "poses.sdf").read_text())[0]
    assert Chem.GetFormalCharge(pose) == Chem.GetFormalCharge(Chem.MolFromSmiles(expected))


@pytest.mark.slow
def test_an_n_acyl_amidine_is_not_trusted_as_a_cation(tmp_path):
    # dimorphite-dl protonates it; its pKa is far lower than an amidine's: docked as given.
    result = run_vina(
        tmp_path, {"protein_pdb": PROTEIN_PDB, "ligand_smiles": "CC(N)=NC(C)=O", "num_poses": 1}
    )
    assert result.summary["ligand"]["protonated_smiles"] is None
    assert any("no protonation state" in warning for warning in result.summary["warnings"])


@pytest.mark.slow
def test_vinardo_scores_and_rescores_under_vina(tmp_path):
    result = run_vina(
        tmp_path, {"protein_pdb": PROTEIN_PDB, "ligand_smiles": LIGAND, "scoring": "vinardo"}
    )
    assert result.summary["scoring"] == "vinardo"
    samples = result.summary["samples"]
    assert all("vina_score" in sample for sample in samples)
    # The default ranking: mean rank under both functions, ties by the docking function.
    assert result.summary["ranking"] == "consensus"
    by_score = sorted(range(len(samples)), key=lambda i: samples[i]["affinity_kcal_mol"])
    by_vina = sorted(range(len(samples)), key=lambda i: samples[i]["vina_score"])
    mean = [(by_score.index(i) + by_vina.index(i)) / 2 for i in range(len(samples))]
    assert mean == sorted(mean)


@pytest.mark.slow
def test_a_flexible_ring_gets_several_starting_conformers(tmp_path):
    result = run_vina(
        tmp_path, {"protein_pdb": PROTEIN_PDB, "ligand_smiles": "OC1CCC(CC1)N1CCOCC1"}
    )
    assert result.summary["ligand"]["start_conformers"] > 1
    aromatic = run_vina(tmp_path / "flat", {"protein_pdb": PROTEIN_PDB, "ligand_smiles": LIGAND})
    assert aromatic.summary["ligand"]["start_conformers"] == 1


def test_diffdock_takes_an_sdf_ligand_and_reports_position_confidence(tmp_path):
    runner = DiffDockRunner(
        diffdock_dir=str(fake_diffdock(tmp_path / "DiffDock")), python=sys.executable
    )
    _protein, crystal = complex_files("1uou")
    result = runner.run(
        inputs=JobInputs(
            sequence="",
            name="pose",
            params={"protein_pdb": PROTEIN_PDB, "ligand_sdf": crystal, "samples_per_complex": 3},
        ),
        workdir=tmp_path / "work",
        progress=lambda stage, fraction: None,
    )
    assert result.summary["position_confidence"] == [0.25, 0.0, -0.25]
    assert result.summary["ligand_source"] == "sdf"
