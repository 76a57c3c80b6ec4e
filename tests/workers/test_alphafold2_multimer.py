"""AlphaFold2-multimer (ColabFold's alphafold2_multimer_v3) on small random weights of its
architecture, and how the API takes, checks and prices complexes.

One runner is shared by the module: the network compiles once for the one complex shape used.
"""

from __future__ import annotations

import json
from typing import Any

import gemmi
import pytest

from apps.jobs.models import Job
from tests.workers.progress import ProgressLog, file_named
from workers.af2_checkpoints import MULTIMER, write_tiny_colabfold_params
from workers.runners import JobInputs, RunResult
from workers.runners.alphafold2 import AlphaFold2Runner

CHAIN_A = "MKTAYIAKQRQIS"
CHAIN_B = "FVKSHFSRQLEE"


@pytest.fixture(scope="module")
def complex_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    data_dir = write_tiny_colabfold_params(tmp_path_factory.mktemp("colabfold"), sets=(MULTIMER,))
    runner = AlphaFold2Runner(data_dir=str(data_dir))
    runner.load()
    return runner.run(
        inputs=JobInputs(
            sequence=f"{CHAIN_A}:{CHAIN_B}",
            name="dimer",
            params={
                "model_preset": "multimer",
                "msa_mode": "single_sequence",
                "num_models": 2,
                "num_recycles": 1,
            },
        ),
        workdir=tmp_path_factory.mktemp("complex"),
        progress=ProgressLog(),
    )


@pytest.mark.slow
def test_a_two_chain_complex_gives_iptm_per_chain_plddt_and_the_full_pae(
    complex_run: RunResult,
) -> None:
    total = len(CHAIN_A) + len(CHAIN_B)
    summary = complex_run.summary
    assert 0.0 <= summary["iptm"] <= 1.0 and 0.0 <= summary["ptm"] <= 1.0
    assert summary["chains"] == [
        {"id": "A", "start": 0, "end": len(CHAIN_A), "length": len(CHAIN_A)},
        {"id": "B", "start": len(CHAIN_A), "end": total, "length": len(CHAIN_B)},
    ]
    assert set(summary["chain_plddt"]) == {"A", "B"}
    assert [sample["model"] for sample in summary["samples"]] == ["model_1", "model_2"] or [
        sample["model"] for sample in summary["samples"]
    ] == ["model_2", "model_1"]

    confidence = json.loads(file_named(complex_run, "confidence.json").read_text())
    assert confidence["sequence"] == f"{CHAIN_A}:{CHAIN_B}"
    assert len(confidence["pae"]) == total and all(len(row) == total for row in confidence["pae"])
    assert len(confidence["plddt"]) == total
    best = confidence["samples"][0]
    assert best["chain_plddt"]["A"] == pytest.approx(
        sum(best["plddt"][: len(CHAIN_A)]) / len(CHAIN_A), abs=0.01
    )
    # ColabFold ranks complexes by 0.8 ipTM + 0.2 pTM.
    ranking = [0.8 * sample["iptm"] + 0.2 * sample["ptm"] for sample in confidence["samples"]]
    assert ranking == sorted(ranking, reverse=True)

    # ColabFold writes one PDB chain per input chain.
    assert "_rank_001_alphafold2_multimer_v3_model_" in complex_run.primary_file
    model = gemmi.read_structure(str(file_named(complex_run, complex_run.primary_file)))[0]
    chains = {
        chain.name: gemmi.one_letter_code([residue.name for residue in chain]).upper()
        for chain in model
    }
    assert chains == {"A": CHAIN_A, "B": CHAIN_B}
    metadata = complex_run.metadata
    assert metadata["chains"] == 2 and metadata["sequence_length"] == total
    assert metadata["msa"] == {
        "mode": "single_sequence",
        "sequences": [1, 1],
        "pairing": "unpaired",
    }
    assert summary["templates"] == {"requested": False, "used": False, "templates": []}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("sequence", "params", "stored", "preset"),
    [
        (f"{CHAIN_A}:{CHAIN_B}", {}, f"{CHAIN_A}:{CHAIN_B}", "multimer"),
        (f">a first\n{CHAIN_A[:6]}\n{CHAIN_A[6:]}\n>b\n{CHAIN_B}\n", {}, None, "multimer"),
        (f">only\n{CHAIN_A}\n", {}, CHAIN_A, "monomer"),
        (f"{CHAIN_A.lower()} : {CHAIN_B}", {"model_preset": "multimer"}, None, "multimer"),
    ],
)
def test_the_api_takes_chains_separated_by_colons_or_as_fasta_records(
    alice: Any, sequence: str, params: dict[str, Any], stored: str | None, preset: str
) -> None:
    response = alice.post(
        "/v1/predict",
        {
            "model": "alphafold2",
            "sequence": sequence,
            "params": {"msa_mode": "single_sequence", **params},
        },
    )
    assert response.status_code == 200, response.text
    job = Job.objects.get(id=response.json()["job_id"])
    assert job.sequence == (stored or f"{CHAIN_A}:{CHAIN_B}")
    assert job.params["model_preset"] == preset
    assert job.params["use_templates"] is False


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sequence": f"{CHAIN_A}:"}, "chain 2) is empty"),
        ({"sequence": f">a\n{CHAIN_A}\n>b\n"}, "FASTA record 2) is empty"),
        ({"sequence": f"{CHAIN_A}:MK1"}, "chain 2) has '1' at position 3"),
        (
            {"sequence": f"{CHAIN_A}:{CHAIN_B}", "params": {"model_preset": "monomer_ptm"}},
            "2 chains; params.model_preset 'monomer_ptm' folds one chain",
        ),
        (
            {
                "sequence": f"{CHAIN_A}:{CHAIN_B}",
                "params": {"msa_mode": "a3m", "a3m": f">q\n{CHAIN_A}\n"},
            },
            "'a3m' takes one chain",
        ),
        (
            {"sequence": CHAIN_A, "params": {"msa_mode": "single_sequence", "use_templates": True}},
            "use_templates needs params.msa_mode 'mmseqs2_server'",
        ),
        ({"sequence": ":".join([CHAIN_A] * 17)}, "17 chains; alphafold2 folds at most 16"),
    ],
)
def test_bad_complexes_and_unavailable_templates_are_refused_at_submission(
    alice: Any, body: dict[str, Any], message: str
) -> None:
    response = alice.post(
        "/v1/predict",
        {"model": "alphafold2", "params": {"msa_mode": "single_sequence"}, **body},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] and message in response.json()["message"]
    assert Job.objects.count() == 0
    assert alice.balance() == 1000


@pytest.mark.django_db(transaction=True)
def test_templates_without_a_configured_msa_server_are_refused(alice: Any, settings: Any) -> None:
    settings.PHONOS_MSA_SERVER_URL = ""
    response = alice.post("/v1/predict", {"model": "alphafold2", "sequence": CHAIN_A})
    assert response.status_code == 400
    assert "none is configured" in response.json()["message"]


@pytest.mark.django_db(transaction=True)
def test_a_complex_costs_by_total_length_as_v1_models_states(alice: Any) -> None:
    (alphafold2,) = [
        model for model in alice.get("/v1/models").json()["models"] if model["id"] == "alphafold2"
    ]
    rule = alphafold2["cost_rule"]
    assert rule["model_preset"] == "multimer" and rule["residues_per_charge"] == 500
    assert "multimer" in alphafold2["params"]["model_preset"]["choices"]

    def validate(sequence: str) -> dict[str, Any]:
        return alice.post(
            "/v1/validate",
            {
                "model": "alphafold2",
                "sequence": sequence,
                "params": {"msa_mode": "single_sequence"},
            },
        ).json()

    small = validate(f"{CHAIN_A}:{CHAIN_B}")
    assert small["credits_cost"] == 50 and small["sequence_length"] == 25
    large = validate(f"{'A' * 300}:{'G' * 300}")  # 600 residues: two blocks of 500 started
    assert large["credits_cost"] == 100 and large["sequence_length"] == 600
    # A single chain keeps the published price whatever its length.
    assert validate("A" * 600)["credits_cost"] == 50

    response = alice.post(
        "/v1/predict",
        {
            "model": "alphafold2",
            "sequence": f"{'A' * 300}:{'G' * 300}",
            "params": {"msa_mode": "single_sequence"},
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["credits_used"] == 100
    assert alice.balance() == 900
