"""ESMFold micro-batching at the runner level: several chains in one padded forward pass give
each job what a lone run gives it (tiny random checkpoint, CPU, fp32)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gemmi
import pytest
import torch

from workers.checkpoints import write_tiny_esmfold
from workers.runners import JobInputs, RunnerError, RunResult
from workers.runners.esmfold import (
    BatchItem,
    BatchLimits,
    EsmFoldRunner,
    batch_plan,
)

# Lengths chosen so that the batch pads every chain but the longest, some by a lot.
LENGTHS = (12, 23, 31, 40, 57, 64)
PARAMS = {"num_recycles": 2}


def chain(length: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ARNDCQEGHILKMFPSTWYV") for _ in range(length))


SEQUENCES = [chain(length, seed) for seed, length in enumerate(LENGTHS)]


class ProgressLog:
    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[tuple[str, float | None]] = []
        self.stop_at = stop_at

    def __call__(self, stage: str, fraction: float | None) -> None:
        if self.stop_at is not None and len(self.events) >= self.stop_at:
            raise Cancelled("cancelled under the worker")
        self.events.append((stage, fraction))


class Cancelled(Exception):
    pass


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> EsmFoldRunner:
    checkpoint = write_tiny_esmfold(tmp_path_factory.mktemp("weights") / "tiny-esmfold")
    built = EsmFoldRunner(weights=str(checkpoint), device="cpu", local_files_only=True)
    built.load()
    return built


def test_each_chain_of_a_padded_batch_equals_its_lone_fold(runner: EsmFoldRunner) -> None:
    batched = runner.predict(SEQUENCES, params=PARAMS)
    for sequence, together in zip(SEQUENCES, batched, strict=True):
        (alone,) = runner.predict([sequence], params=PARAMS)
        assert together.ca_positions.shape == (len(sequence), 3)
        ca_deviation = (together.ca_positions - alone.ca_positions).norm(dim=-1).max()
        assert ca_deviation <= 0.01, (len(sequence), float(ca_deviation))
        plddt_gap = max(abs(a - b) for a, b in zip(together.plddt, alone.plddt, strict=True))
        assert plddt_gap <= 1e-3, (len(sequence), plddt_gap)
        assert together.pae.shape == (len(sequence), len(sequence))
        assert (together.pae - alone.pae).abs().max() <= 1e-3, len(sequence)
        # pTM normalises over the chain: computed on the crop, not over the padded batch.
        assert together.ptm == pytest.approx(alone.ptm, abs=1e-3), len(sequence)
    # The per-chain pTMs differ, so none of them is the batch-wide value transformers reports.
    assert len({round(prediction.ptm, 4) for prediction in batched}) == len(SEQUENCES)


def ca_coordinates(pdb_path: Path) -> torch.Tensor:
    structure = gemmi.read_structure(str(pdb_path))
    # Copied out: gemmi's positions point into the structure, freed when it goes.
    return torch.tensor([residue["CA"][0].pos.tolist() for residue in structure[0][0]])


def confidence(result: RunResult) -> dict[str, Any]:
    (file,) = [item for item in result.files if item.role == "confidence"]
    loaded: dict[str, Any] = json.loads(file.path.read_text())
    return loaded


def pdb_file(result: RunResult) -> Path:
    (file,) = [item for item in result.files if item.role == "structure"]
    return file.path


def test_run_batch_writes_each_job_the_files_of_a_lone_run(
    runner: EsmFoldRunner, tmp_path: Path
) -> None:
    logs = [ProgressLog() for _ in SEQUENCES]
    items = [
        BatchItem(
            inputs=JobInputs(sequence=sequence, name=f"job {index}", params=PARAMS),
            workdir=tmp_path / f"batched-{index}",
            progress=logs[index],
        )
        for index, sequence in enumerate(SEQUENCES)
    ]
    outcomes = runner.run_batch(items)
    for index, (sequence, outcome) in enumerate(zip(SEQUENCES, outcomes, strict=True)):
        assert isinstance(outcome, RunResult)
        alone = runner.run(
            inputs=JobInputs(sequence=sequence, name=f"job {index}", params=PARAMS),
            workdir=tmp_path / f"alone-{index}",
            progress=ProgressLog(),
        )
        assert outcome.metadata["batch"] == {"size": len(SEQUENCES), "padded_length": 64}
        assert alone.metadata["batch"] == {"size": 1, "padded_length": len(sequence)}
        batched_ca = ca_coordinates(pdb_file(outcome))
        alone_ca = ca_coordinates(pdb_file(alone))
        assert len(batched_ca) == len(sequence)
        assert (batched_ca - alone_ca).norm(dim=-1).max() <= 0.01
        # The files round pLDDT and PAE to 0.01: a value a hair either side of a rounding
        # boundary may differ by one step there (the exact values agree to 1e-3, above).
        together, apart = confidence(outcome), confidence(alone)
        assert together["sequence"] == sequence
        for key in ("plddt", "pae"):
            flat_together = torch.tensor(together[key]).flatten()
            flat_apart = torch.tensor(apart[key]).flatten()
            assert (flat_together - flat_apart).abs().max() <= 0.0101, key
        assert together["ptm"] == pytest.approx(apart["ptm"], abs=2e-4)
        # Each job got its own progress, to the end.
        stages = [stage for stage, _ in logs[index].events]
        assert stages[0] == "inference" and stages[-1] == "writing_outputs"
        assert [f for s, f in logs[index].events if s == "inference"][-1] == 1.0


def test_a_cancelled_or_invalid_job_ends_alone(runner: EsmFoldRunner, tmp_path: Path) -> None:
    # Cancelled after its second progress report: mid-inference.
    cancelled = ProgressLog(stop_at=2)
    items = [
        BatchItem(
            inputs=JobInputs(sequence=SEQUENCES[0], name="kept", params=PARAMS),
            workdir=tmp_path / "kept",
            progress=ProgressLog(),
        ),
        BatchItem(
            inputs=JobInputs(sequence=SEQUENCES[1], name="cancelled", params=PARAMS),
            workdir=tmp_path / "cancelled",
            progress=cancelled,
        ),
        BatchItem(
            inputs=JobInputs(sequence="MKT*Z", name="invalid", params=PARAMS),
            workdir=tmp_path / "invalid",
            progress=ProgressLog(),
        ),
        BatchItem(
            inputs=JobInputs(sequence=SEQUENCES[2], name="kept too", params=PARAMS),
            workdir=tmp_path / "kept-too",
            progress=ProgressLog(),
        ),
    ]
    kept, stopped, invalid, kept_too = runner.run_batch(items)
    assert isinstance(stopped, Cancelled)
    assert len(cancelled.events) == 2
    assert not (tmp_path / "cancelled").exists()
    assert isinstance(invalid, RunnerError) and "unsupported characters" in invalid.message
    assert isinstance(kept, RunResult) and isinstance(kept_too, RunResult)
    # The invalid job never joined the forward pass; the cancelled one rode it to the end.
    assert kept.metadata["batch"]["size"] == 3
    assert confidence(kept_too)["sequence"] == SEQUENCES[2]


def test_a_lone_cancelled_job_stops_its_forward_pass(runner: EsmFoldRunner, tmp_path: Path) -> None:
    cancelled = ProgressLog(stop_at=1)
    with pytest.raises(Cancelled):
        runner.run(
            inputs=JobInputs(sequence=SEQUENCES[0], name="x", params=PARAMS),
            workdir=tmp_path / "x",
            progress=cancelled,
        )
    assert cancelled.events == [("inference", 0.0)]


def test_one_forward_pass_takes_one_parameter_set(runner: EsmFoldRunner, tmp_path: Path) -> None:
    items = [
        BatchItem(
            inputs=JobInputs(sequence=SEQUENCES[0], name="a", params={"num_recycles": 1}),
            workdir=tmp_path / "a",
            progress=ProgressLog(),
        ),
        BatchItem(
            inputs=JobInputs(sequence=SEQUENCES[1], name="b", params={"num_recycles": 2}),
            workdir=tmp_path / "b",
            progress=ProgressLog(),
        ),
    ]
    with pytest.raises(ValueError, match="parameter set"):
        runner.run_batch(items)
    assert sorted(
        map(sorted, batch_plan(items, BatchLimits(max_tokens=10_000, max_jobs=8, max_padding=0.9)))
    ) == [[0], [1]]


def plan_items(lengths: list[int], params: dict[str, Any] | None = None) -> list[BatchItem]:
    return [
        BatchItem(
            inputs=JobInputs(sequence="A" * length, name="", params=params or {}),
            workdir=Path(),
            progress=ProgressLog(),
        )
        for length in lengths
    ]


def test_batch_plan_groups_similar_lengths_within_every_limit() -> None:
    lengths = [300, 50, 55, 290, 120, 60, 130, 52, 280, 125]
    limits = BatchLimits(max_tokens=1000, max_jobs=4, max_padding=0.25)
    groups = batch_plan(plan_items(lengths), limits)
    assert sorted(index for group in groups for index in group) == list(range(len(lengths)))
    for group in groups:
        members = [lengths[index] for index in group]
        padded = len(members) * max(members)
        assert len(members) <= limits.max_jobs
        assert padded <= limits.max_tokens or len(members) == 1
        assert 1 - sum(members) / padded <= limits.max_padding
    assert sorted(sorted(lengths[i] for i in group) for group in groups) == [
        [50, 52, 55, 60],
        [120, 125, 130],
        [280, 290, 300],
    ]


def test_batch_plan_keeps_a_chain_over_the_budget_and_bad_input_alone() -> None:
    items = plan_items([40, 2000, 45])
    items.append(
        BatchItem(inputs=JobInputs(sequence="", name="", params={}), workdir=Path(), progress=print)
    )
    items += plan_items([42], params={"num_recycles": 0})
    groups = batch_plan(items, BatchLimits(max_tokens=1000, max_jobs=8, max_padding=0.5))
    assert sorted(sorted(group) for group in groups) == [[0, 2], [1], [3], [4]]
    # max_jobs 1 is no batching at all.
    lone = batch_plan(
        plan_items([40, 41, 42]), BatchLimits(max_tokens=10_000, max_jobs=1, max_padding=1.0)
    )
    assert sorted(lone) == [[0], [1], [2]]


BASE = "MKTVRQERLKSIVRILERSKEPVSGAQLAEELSVSRQVIVQDIAYLRSLGYNIVATPRGYVLAGG"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_folds_the_jobs_it_holds_together_and_a_cancel_ends_one_alone(
    alice: Any, start_worker: Any, tiny_esmfold: Path
) -> None:
    from apps.jobs.models import Job, JobEvent

    # Long enough (seconds together) to be cancelled mid-pass; similar lengths share a
    # pass; the fourth job's own parameter set gets a pass of its own.
    sequences = [BASE, BASE[:60], BASE[:56]]
    batched = [
        alice.post(
            "/v1/predict",
            {"model": "esmfold", "sequence": sequence, "params": {"num_recycles": 12}},
        ).json()["job_id"]
        for sequence in sequences
    ]
    lone = alice.post(
        "/v1/predict", {"model": "esmfold", "sequence": BASE[:30], "params": {"num_recycles": 1}}
    ).json()["job_id"]
    # Started after the submissions, so that it holds all four jobs at once.
    start_worker(
        queues="esmfold",
        concurrency=4,
        pool="threads",
        PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold),
        PHONOS_ESMFOLD_BATCH_WAIT_MS="5000",
    )
    doomed = batched[1]
    deadline = time.monotonic() + 120
    while not (Job.objects.get(id=doomed).progress or 0) > 0:
        assert time.monotonic() < deadline, "the batch never got going"
        time.sleep(0.05)
    assert alice.post(f"/v1/jobs/{doomed}/cancel").status_code == 200

    for job_id, sequence in zip(batched, sequences, strict=True):
        job = wait_for(alice, job_id)
        if job_id == doomed:
            assert job["status"] == "cancelled"
            assert alice.get(f"/v1/jobs/{job_id}/results").status_code == 400
            continue
        assert job["status"] == "completed", job
        assert job["metrics"]["batch_size"] == 3
        assert job["metrics"]["run_seconds"] > 0 and job["metrics"]["queue_seconds"] >= 0
        confidence = alice.get(f"/v1/jobs/{job_id}/results/confidence").json()
        assert confidence["sequence"] == sequence
        assert len(confidence["pae"]) == len(sequence)
        # Each job has its own progress events, to the end of its own inference.
        fractions = JobEvent.objects.filter(job_id=job_id, stage="inference").values_list(
            "progress", flat=True
        )
        assert list(fractions)[-1] == 1.0
    alone = wait_for(alice, lone)
    assert alone["status"] == "completed", alone
    assert alone["metrics"]["batch_size"] == 1
    assert alice.balance() == 1000 - 3 * 10


def wait_for(client: Any, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if body["status"] in {"completed", "failed", "cancelled"}:
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never finished: {body}")


@pytest.mark.slow
def test_the_gpu_benchmark_builds_esmfold_v1_shapes_and_refuses_a_cpu() -> None:
    from bench.gpu_esmfold import build_on, parameter_count

    model = build_on("meta")  # shapes only: nothing is allocated
    assert 3.4e9 < parameter_count(model) < 3.6e9
    assert 2.8e9 < parameter_count(model.esm) < 2.9e9  # ESM-2 3B
    assert model.esm.config.hidden_size == 2560
    assert len(model.esm.encoder.layer) == 36
    assert model.esm.config.num_attention_heads == 40
    assert len(model.trunk.blocks) == 48
    assert model.trunk.config.sequence_state_dim == 1024
    assert model.trunk.config.pairwise_state_dim == 128

    root = Path(__file__).resolve().parents[2]
    refused = subprocess.run(
        [str(root / "bench" / "gpu_esmfold.sh")],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""},
        timeout=300,
    )
    assert refused.returncode == 2, refused.stderr
    assert "needs a CUDA GPU" in refused.stderr
