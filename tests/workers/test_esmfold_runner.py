"""The ESMFold runner on a tiny random checkpoint, through the same calls a worker makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gemmi
import pytest

from tests.optional import require_module

require_module("torch", hint="pip install -e '.[esmfold]'")
require_module("transformers", hint="pip install -e '.[esmfold]'")

from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import EsmTokenizer  # noqa: E402

from tests.workers.progress import ProgressLog  # noqa: E402
from workers.checkpoints import write_tiny_esmfold  # noqa: E402
from workers.runners import JobInputs, RunnerError, RunResult, get_runner  # noqa: E402
from workers.runners.esmfold import ALPHABET, EsmFoldRunner  # noqa: E402

SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLI"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_esmfold(tmp_path_factory.mktemp("weights") / "tiny-esmfold")


@pytest.fixture(scope="module")
def runner(checkpoint: Path) -> EsmFoldRunner:
    built = get_runner("esmfold", weights=str(checkpoint), local_files_only=True)
    assert isinstance(built, EsmFoldRunner)
    return built


@pytest.fixture(scope="module")
def first_run(
    runner: EsmFoldRunner, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunResult, ProgressLog]:
    progress = ProgressLog()
    result = runner.run(
        inputs=JobInputs(sequence=SEQUENCE, name="../my protein", params={}),
        workdir=tmp_path_factory.mktemp("job-1"),
        progress=progress,
    )
    return result, progress


def read_confidence(result: RunResult) -> dict[str, Any]:
    (confidence_file,) = [file for file in result.files if file.role == "confidence"]
    confidence: dict[str, Any] = json.loads(confidence_file.path.read_text())
    return confidence


def test_pdb_has_one_ca_per_residue_with_plddt_as_b_factor(
    first_run: tuple[RunResult, ProgressLog],
) -> None:
    result, _ = first_run
    confidence = read_confidence(result)
    (pdb_file,) = [file for file in result.files if file.name == result.primary_file]
    assert pdb_file.role == "structure"
    assert pdb_file.content_type == "chemical/x-pdb"
    # A job name never escapes the job's directory.
    assert result.primary_file == "my_protein.pdb"

    structure = gemmi.read_structure(str(pdb_file.path))
    (chain,) = structure[0]
    assert gemmi.one_letter_code([residue.name for residue in chain]) == SEQUENCE
    ca_atoms = [atom for residue in chain for atom in residue if atom.name == "CA"]
    assert len(ca_atoms) == len(SEQUENCE)
    assert [atom.b_iso for atom in ca_atoms] == pytest.approx(confidence["plddt"], abs=1e-3)


def test_confidence_json_holds_plddt_pae_ptm_and_summary(
    first_run: tuple[RunResult, ProgressLog],
) -> None:
    result, _ = first_run
    confidence = read_confidence(result)
    length = len(SEQUENCE)

    assert confidence["sequence"] == SEQUENCE
    assert len(confidence["plddt"]) == length
    assert all(0 <= value <= 100 for value in confidence["plddt"])
    assert confidence["mean_plddt"] == pytest.approx(sum(confidence["plddt"]) / length, abs=0.01)
    assert len(confidence["pae"]) == length
    assert all(len(row) == length for row in confidence["pae"])
    assert 0.0 <= confidence["ptm"] <= 1.0
    assert {key: confidence[key] for key in result.summary} == result.summary
    assert result.summary["best_sample"] == 0
    assert result.summary["samples"][0]["file"] == result.primary_file


def test_metadata_flags_untrained_checkpoint(first_run: tuple[RunResult, ProgressLog]) -> None:
    result, _ = first_run
    assert result.metadata["untrained"] is True
    assert result.metadata["model_id"] == "esmfold"
    assert result.metadata["device"] == "cpu"
    # Called directly, the runner takes the registry's defaults.
    assert result.metadata["params"] == {"chunk_size": 128, "num_recycles": 4}


def test_progress_reports_stages_in_order(first_run: tuple[RunResult, ProgressLog]) -> None:
    _, progress = first_run
    assert progress.stages() == ["loading_model", "inference", "writing_outputs"]
    inference = progress.fractions("inference")
    assert inference[0] == 0.0
    assert inference[-1] == 1.0
    assert inference == sorted(inference, key=lambda fraction: fraction or 0.0)


def test_second_run_reuses_the_resident_model(
    runner: EsmFoldRunner,
    first_run: tuple[RunResult, ProgressLog],
    tmp_path: Path,
) -> None:
    model = runner.model
    progress = ProgressLog()
    result = runner.run(
        inputs=JobInputs(
            sequence=SEQUENCE[:20], name="again", params={"num_recycles": 0, "chunk_size": 8}
        ),
        workdir=tmp_path,
        progress=progress,
    )
    assert runner.model is model
    assert progress.stages() == ["inference", "writing_outputs"]
    # num_recycles=0 is a single trunk pass.
    assert progress.fractions("inference") == [0.0, 1.0]
    assert model.trunk.chunk_size == 8
    assert result.metadata["params"] == {"chunk_size": 8, "num_recycles": 0}


class Cancelled(Exception):
    pass


def test_progress_callback_can_cancel_mid_inference(
    runner: EsmFoldRunner, first_run: tuple[RunResult, ProgressLog], tmp_path: Path
) -> None:
    def cancel_after_first_pass(stage: str, fraction: float | None) -> None:
        if stage == "inference" and fraction:
            raise Cancelled

    with pytest.raises(Cancelled):
        runner.run(
            inputs=JobInputs(sequence=SEQUENCE, name="cancelled"),
            workdir=tmp_path / "cancelled",
            progress=cancel_after_first_pass,
        )
    assert not (tmp_path / "cancelled").exists()
    # The runner stays usable: its lock is released and its progress hook removed.
    progress = ProgressLog()
    runner.run(
        inputs=JobInputs(sequence=SEQUENCE, name="after"),
        workdir=tmp_path / "after",
        progress=progress,
    )
    # The registry's default num_recycles (4): five trunk passes.
    assert progress.fractions("inference") == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_missing_weights_directory_names_the_setting(tmp_path: Path) -> None:
    runner = get_runner("esmfold", weights=str(tmp_path / "absent"), local_files_only=True)
    with pytest.raises(RunnerError, match="PHONOS_ESMFOLD_WEIGHTS"):
        runner.run(
            inputs=JobInputs(sequence=SEQUENCE, name="job"),
            workdir=tmp_path / "out",
            progress=ProgressLog(),
        )


def test_checkpoint_without_folding_weights_is_refused(tmp_path: Path) -> None:
    damaged = write_tiny_esmfold(tmp_path / "damaged")
    weights_file = damaged / "model.safetensors"
    tensors = load_file(weights_file)
    without_trunk = {
        name: tensor for name, tensor in tensors.items() if not name.startswith("trunk.")
    }
    save_file(without_trunk, weights_file)
    runner = get_runner("esmfold", weights=str(damaged), local_files_only=True)
    with pytest.raises(RunnerError, match="PHONOS_ESMFOLD_WEIGHTS"):
        runner.load()


@pytest.mark.parametrize(
    ("sequence", "params", "message"),
    [
        ("", {}, "empty"),
        ("MKTA:YIAK", {}, "unsupported characters"),
        ("MKTABZ", {}, "unsupported characters 'BZ'"),
    ],
)
def test_invalid_input_is_refused_before_loading(
    tmp_path: Path, sequence: str, params: dict[str, Any], message: str
) -> None:
    runner = get_runner("esmfold", weights=str(tmp_path / "absent"), local_files_only=True)
    with pytest.raises(RunnerError, match=message):
        runner.run(
            inputs=JobInputs(sequence=sequence, name="job", params=params),
            workdir=tmp_path / "out",
            progress=ProgressLog(),
        )


def test_checkpoint_tokenizer_matches_the_runner_residue_order(checkpoint: Path) -> None:
    tokenizer = EsmTokenizer.from_pretrained(checkpoint, local_files_only=True)
    input_ids = tokenizer(SEQUENCE, add_special_tokens=False)["input_ids"]
    assert input_ids == [ALPHABET.index(residue) for residue in SEQUENCE]


def test_unknown_model_is_refused() -> None:
    with pytest.raises(RunnerError, match="unknown model 'alphafold9'"):
        get_runner("alphafold9")


def test_importing_the_registry_does_not_import_torch() -> None:
    probe = "import sys, workers.runners; sys.exit('torch' in sys.modules)"
    subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, check=True)
