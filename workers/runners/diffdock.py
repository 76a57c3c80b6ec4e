"""DiffDock, driven through its own command line: a protein PDB and a ligand (SMILES, SDF or
MOL2; no pocket: DiffDock searches the whole protein) in, ranked poses with DiffDock's
confidence scores out.

DiffDock is not a package: it runs from a checkout of its repository with its own Python
environment (PHONOS_DIFFDOCK_DIR, PHONOS_DIFFDOCK_PYTHON; docs/docking.md says how to install
it). The contract used here is its `python -m inference` entry point, the CSV of complexes it
reads and the `rank{N}_confidence{c}.sdf` files it writes.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from rdkit import Chem

from apps.jobs.registry import MODELS
from workers.runners.base import (
    JobInputs,
    OutputFile,
    ProgressCallback,
    RunnerError,
    RunResult,
    confidence_write,
)
from workers.runners.docking import (
    POSES_FILE,
    complex_pdb,
    file_stem,
    pose_outputs,
    protein_pdb_text,
    read_ligand,
    read_protein,
)
from workers.runners.scrub import server_paths_scrub

DIR_SETTING = "PHONOS_DIFFDOCK_DIR"
PYTHON_SETTING = "PHONOS_DIFFDOCK_PYTHON"
CONFIG_FILE = "default_inference_args.yaml"
COMPLEX_NAME = "complex"
LOG_FILE = "diffdock.log"
MAX_BATCH_SIZE = 10
STDERR_LINES = 8
_RANK_FILE = re.compile(r"^rank(\d+)_confidence(-?\d+(?:\.\d+)?)\.sdf$")


class DiffDockRunner:
    model_id = "diffdock"

    def __init__(
        self, *, diffdock_dir: str = "", python: str = "python", device: str | None = None
    ):
        self.diffdock_dir = Path(diffdock_dir).expanduser() if diffdock_dir else None
        self.python = python
        self.device = device
        # DiffDock takes the whole GPU: one job at a time per worker process.
        self._lock = threading.Lock()

    def load(self) -> None:
        """Check the installation; DiffDock itself loads its weights in each run's process."""
        self._installation()

    def resident_info(self) -> dict[str, Any]:
        # DiffDock loads its weights in each run's own process: nothing stays resident here.
        return {
            "device": self.device or "auto",
            "memory_bytes": None,
            "weights": str(self.diffdock_dir),
        }

    def run(self, *, inputs: JobInputs, workdir: Path, progress: ProgressCallback) -> RunResult:
        protein = read_protein(inputs.params)
        ligand = read_ligand(inputs_sequence=inputs.sequence, params=inputs.params)
        # DiffDock builds its own conformers from SMILES; an SDF or MOL2 ligand goes in as the
        # SMILES of the molecule it describes (bond orders and stereo kept).
        smiles = ligand.smiles
        # Checked and filled in at submission (the registry's rules); a direct call gets its
        # defaults here.
        params = MODELS["diffdock"].params_with_defaults(inputs.params)
        inference_steps = params["inference_steps"]
        samples = params["samples_per_complex"]
        diffdock_dir = self._installation()
        stem = file_stem(inputs.name)

        run_dir = workdir / "diffdock"
        out_dir = run_dir / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        protein_path = run_dir / "protein.pdb"
        protein_path.write_text(protein_pdb_text(protein))
        csv_path = run_dir / "complexes.csv"
        with csv_path.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(
                ["complex_name", "protein_path", "ligand_description", "protein_sequence"]
            )
            writer.writerow([COMPLEX_NAME, str(protein_path), smiles, ""])
        # DiffDock applies --config after its command line, so these settings must be in it.
        config = yaml.safe_load((diffdock_dir / CONFIG_FILE).read_text()) or {}
        config.update(
            {
                "inference_steps": inference_steps,
                "samples_per_complex": samples,
                "batch_size": min(samples, MAX_BATCH_SIZE),
                # Its shipped config skips the last reverse-diffusion step (19 of 20); keep that.
                "actual_steps": max(inference_steps - 1, 1),
            }
        )
        config_path = run_dir / "inference_args.yaml"
        config_path.write_text(yaml.safe_dump(config))

        log_path = workdir / LOG_FILE
        with self._lock:
            started = time.perf_counter()
            progress("inference", None)
            returncode = self._run_inference(
                diffdock_dir=diffdock_dir,
                arguments=[
                    "--config",
                    str(config_path),
                    "--protein_ligand_csv",
                    str(csv_path),
                    "--out_dir",
                    str(out_dir),
                ],
                log_path=log_path,
            )
            inference_s = time.perf_counter() - started
        # The log is one of the job's files: the tenant sees it without this worker's paths.
        log_text = server_paths_scrub(log_path.read_text(errors="replace"))
        log_path.write_text(log_text)
        if returncode != 0:
            raise RunnerError(f"DiffDock exited with status {returncode}: {_last_lines(log_text)}")

        writing_started = time.perf_counter()
        progress("writing_outputs", None)
        ranked = _ranked_pose_files(out_dir / COMPLEX_NAME)
        poses = [_read_pose(path) for _rank, _confidence, path in ranked]
        samples_out: list[dict[str, Any]] = [
            {"index": index, "rank": rank, "confidence": confidence, "file": path.name}
            for index, (rank, confidence, path) in enumerate(ranked)
        ]
        summary: dict[str, Any] = {
            "best_confidence": samples_out[0]["confidence"],
            "num_poses": len(samples_out),
            "samples": samples_out,
            "best_sample": 0,
            # As NVIDIA's DiffDock service answers: one confidence per pose, in pose order.
            "position_confidence": [sample["confidence"] for sample in samples_out],
            "ligand_source": ligand.source,
            "warnings": ligand.warnings,
        }
        poses_path = workdir / POSES_FILE
        writer = Chem.SDWriter(str(poses_path))
        try:
            for sample, pose in zip(samples_out, poses, strict=True):
                pose.SetProp("_Name", f"pose_{sample['rank']}")
                pose.SetIntProp("rank", sample["rank"])
                pose.SetProp("confidence", f"{sample['confidence']:.2f}")
                pose.SetProp("smiles", smiles)
                writer.write(pose)
        finally:
            writer.close()
        complex_name = f"{stem}_complex.pdb"
        complex_path = workdir / complex_name
        complex_path.write_text(complex_pdb(protein=protein, ligand=poses[0]))
        confidence = confidence_write(workdir, {**summary, "ligand_smiles": smiles})
        write_s = time.perf_counter() - writing_started

        files = [
            *pose_outputs(
                complex_name=complex_name, complex_path=complex_path, poses_path=poses_path
            ),
            confidence,
            OutputFile(name=LOG_FILE, path=log_path, content_type="text/plain", role="confidence"),
        ]
        files += [
            OutputFile(
                name=path.name, path=path, content_type="chemical/x-mdl-sdfile", role="structure"
            )
            for _rank, _confidence, path in ranked
        ]
        return RunResult(
            files=files,
            primary_file=complex_name,
            summary=summary,
            metadata={
                "model_id": self.model_id,
                "weights": str(diffdock_dir),
                "untrained": False,
                "device": self.device or "auto",
                "params": {"inference_steps": inference_steps, "samples_per_complex": samples},
                "timings": {"inference_s": round(inference_s, 3), "write_s": round(write_s, 3)},
            },
        )

    def _installation(self) -> Path:
        if self.diffdock_dir is None:
            raise RunnerError(
                f"DiffDock is not installed on this worker: set {DIR_SETTING} to a DiffDock "
                f"checkout and {PYTHON_SETTING} to its Python (see docs/docking.md)"
            )
        for required in ("inference.py", CONFIG_FILE):
            if not (self.diffdock_dir / required).is_file():
                raise RunnerError(
                    f"{DIR_SETTING}={str(self.diffdock_dir)!r} is not a DiffDock checkout "
                    f"(no {required}); see docs/docking.md"
                )
        return self.diffdock_dir

    def _run_inference(self, *, diffdock_dir: Path, arguments: list[str], log_path: Path) -> int:
        environment = dict(os.environ)
        if self.device == "cpu":
            environment["CUDA_VISIBLE_DEVICES"] = ""
        with log_path.open("w") as log:
            try:
                process = subprocess.Popen(
                    [self.python, "-m", "inference", *arguments],
                    cwd=diffdock_dir,
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            except OSError as error:
                raise RunnerError(
                    f"could not start DiffDock with {PYTHON_SETTING}={self.python!r}: {error}"
                ) from None
            try:
                return process.wait()
            finally:
                # A time limit or a cancel interrupts the wait: never leave DiffDock running.
                if process.poll() is None:
                    process.kill()
                    process.wait()


def _last_lines(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-STDERR_LINES:]) or "no output"


def _ranked_pose_files(complex_dir: Path) -> list[tuple[int, float, Path]]:
    ranked = []
    for path in complex_dir.glob("rank*_confidence*.sdf"):
        match = _RANK_FILE.match(path.name)
        if match:
            ranked.append((int(match.group(1)), float(match.group(2)), path))
    if not ranked:
        raise RunnerError("DiffDock finished but wrote no poses")
    return sorted(ranked)


def _read_pose(path: Path) -> Chem.Mol:
    molecule = next(iter(Chem.SDMolSupplier(str(path), removeHs=False)), None)
    if molecule is None:
        raise RunnerError(f"DiffDock wrote a pose RDKit cannot read: {path.name}")
    pose: Chem.Mol = molecule
    return pose
