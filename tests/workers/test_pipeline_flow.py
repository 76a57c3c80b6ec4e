"""A fold→dock pipeline end to end through a real worker: the tiny ESMFold predicts, the dock
is published only then, and Vina docks into the structure that was predicted."""

import gemmi
import pytest

from apps.jobs.models import Job
from tests.workers.test_docking import FAST_VINA, wait_for_status

SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"


def protein_atoms(pdb_text: str) -> list[tuple[str, str, tuple[float, float, float]]]:
    structure = gemmi.read_pdb_string(pdb_text)
    return [
        (
            residue.name,
            atom.name,
            (round(atom.pos.x, 2), round(atom.pos.y, 2), round(atom.pos.z, 2)),
        )
        for chain in structure[0]
        for residue in chain
        if residue.het_flag == "A"
        for atom in residue
        if atom.element.name != "H"
    ]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_pipeline_docks_into_the_structure_its_fold_predicted(
    alice, start_worker, s3_storage, tiny_esmfold
):
    start_worker(queues="esmfold,vina", PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold), **s3_storage)
    submitted = alice.post(
        "/v1/pipelines",
        json={
            "name": "fold then dock",
            "fold": {"model": "esmfold", "sequence": SEQUENCE},
            "dock": {"model": "vina", "params": {"ligand_smiles": "CCO", **FAST_VINA}},
        },
    )
    assert submitted.status_code == 200, submitted.text
    pipeline = submitted.json()["pipeline"]

    fold = wait_for_status(alice, pipeline["fold_job_id"], {"completed", "failed"})
    assert fold["status"] == "completed", fold.get("error")
    dock = wait_for_status(alice, pipeline["dock_job_id"], {"completed", "failed"})
    assert dock["status"] == "completed", dock.get("error")
    assert dock["depends_on"] == pipeline["fold_job_id"]
    # The dock started only after its fold had finished.
    assert (
        Job.objects.get(id=dock["job_id"]).started_at
        >= Job.objects.get(id=fold["job_id"]).finished_at
    )

    predicted = protein_atoms(alice.get(fold["download_url"]).text)
    complex_pdb = alice.get(dock["download_url"]).text
    assert len(predicted) > 200
    assert protein_atoms(complex_pdb) == predicted
    names = [residue.name for chain in gemmi.read_pdb_string(complex_pdb)[0] for residue in chain]
    assert names.count("LIG") == 1
    assert alice.balance() == 985
