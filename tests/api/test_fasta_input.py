"""FASTA in `sequence` for structure models, over real HTTP: one record with its header
dropped; several records answer 400 and point to /v1/batch, except for AlphaFold2, where they
are the chains of one complex."""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

ONE_RECORD = ">sp|P69905|HBA_HUMAN Hemoglobin subunit alpha\nMVLSPADKTN\nvkaawgkvga\n; a comment\n"
TWO_RECORDS = ">first\nMVLSPADKTN\n>second\nVKAAWGKVGA\n"


def test_one_fasta_record_folds_its_residues_without_the_header(alice):
    response = alice.post("/v1/predict", json={"model": "esmfold", "sequence": ONE_RECORD})
    assert response.status_code == 200, response.text
    job = alice.get(f"/v1/jobs/{response.json()['job_id']}").json()
    assert job["sequence"] == "MVLSPADKTNVKAAWGKVGA"

    valid = alice.post("/v1/validate", json={"model": "esmfold", "sequence": ONE_RECORD}).json()
    assert (valid["valid"], valid["sequence_length"]) == (True, 20)


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/validate"])
def test_several_fasta_records_answer_400_pointing_to_batch(alice, path):
    before = alice.balance()
    response = alice.post(path, json={"model": "esmfold", "sequence": TWO_RECORDS})
    if path == "/v1/validate":
        body = response.json()
        assert body["valid"] is False
        message = body["errors"][0]
    else:
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "Bad Request"
        message = response.json()["message"]
    assert "2 FASTA records" in message and "/v1/batch" in message
    assert alice.balance() == before
    assert alice.get("/v1/jobs").json()["pagination"]["total"] == 0


def test_a_batch_takes_one_record_per_item(alice):
    records = [f">protein {n}\nMVLSPADKTN{'A' * n}\n" for n in range(1, 4)]
    response = alice.post(
        "/v1/batch", json={"jobs": [{"model": "esmfold", "sequence": r} for r in records]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["summary"]["successful"] == 3
    sequences = {
        alice.get(f"/v1/jobs/{item['job_id']}").json()["sequence"]
        for item in response.json()["results"]
    }
    assert sequences == {f"MVLSPADKTN{'A' * n}" for n in range(1, 4)}


def test_a_header_only_record_is_empty(alice):
    response = alice.post("/v1/predict", json={"model": "esmfold", "sequence": ">nothing\n"})
    assert response.status_code == 400
    assert response.json()["message"] == "sequence is empty"


def test_alphafold2_reads_several_records_as_the_chains_of_a_complex(alice):
    response = alice.post("/v1/predict", json={"model": "alphafold2", "sequence": TWO_RECORDS})
    assert response.status_code == 200, response.text
    job = alice.get(f"/v1/jobs/{response.json()['job_id']}").json()
    assert job["sequence"] == "MVLSPADKTN:VKAAWGKVGA"
    assert job["params"]["model_preset"] == "multimer"

    one_chain = ">sp|P69905|HBA_HUMAN\nMVLSPADKTN\nvkaawgkvga\n"
    single = alice.post("/v1/predict", json={"model": "alphafold2", "sequence": one_chain})
    assert single.status_code == 200, single.text
    assert alice.get(f"/v1/jobs/{single.json()['job_id']}").json()["sequence"] == (
        "MVLSPADKTNVKAAWGKVGA"
    )


def test_a_pipeline_fold_takes_fasta_too(alice):
    response = alice.post(
        "/v1/pipelines",
        json={
            "fold": {"model": "esmfold", "sequence": TWO_RECORDS},
            "dock": {"model": "vina", "params": {"ligand_smiles": "CCO"}},
        },
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("fold: sequence holds 2 FASTA records")
