"""AutoDock Vina: a protein PDB and a ligand SMILES in, ranked poses with affinities out.

The receptor and the ligand are prepared with meeko (the Vina authors' preparation tool), the
ligand's starting conformer with RDKit (hydrogens, ETKDG, MMFF). Vina runs on the CPU.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gemmi
import meeko
import numpy as np
import vina
from meeko import (
    MoleculePreparation,
    PDBQTMolecule,
    PDBQTWriterLegacy,
    Polymer,
    RDKitMolCreate,
    ResidueChemTemplates,
)
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem

from apps.jobs.registry import MODELS
from workers.runners.base import JobInputs, OutputFile, ProgressCallback, RunnerError, RunResult
from workers.runners.docking import (
    complex_pdb,
    file_stem,
    protein_pdb_text,
    read_ligand_smiles,
    read_protein,
)

CONFIDENCE_FILE = "confidence.json"
POSES_FILE = "poses.sdf"
RECEPTOR_FILE = "receptor.pdbqt"
# The default box covers the whole protein plus this margin, up to MAX_DEFAULT_BOX_SIZE per
# side; a larger protein gets a box of that size around its centre (give a box to aim it).
BOX_MARGIN = 10.0
MAX_DEFAULT_BOX_SIZE = 30.0
DEFAULT_BOX_SIZE_AROUND_CENTER = 20.0
_AXES = ("x", "y", "z")


@dataclass(frozen=True, kw_only=True)
class VinaParams:
    center: tuple[float, float, float] | None
    size: tuple[float, float, float] | None
    exhaustiveness: int
    num_poses: int
    seed: int


class VinaRunner:
    model_id = "vina"

    def __init__(self, *, cpus: int = 0) -> None:
        # 0: all the cores of the machine, as Vina defines it.
        self.cpus = cpus
        # One docking at a time: Vina already uses every core given to it.
        self._lock = threading.Lock()

    def load(self) -> None:
        """Nothing to load: Vina's scoring function has no weights to keep resident."""

    def resident_info(self) -> dict[str, Any]:
        # Vina's scoring function is built in: no weights, CPU only.
        return {"device": "cpu", "memory_bytes": None, "weights": None}

    def run(self, *, inputs: JobInputs, workdir: Path, progress: ProgressCallback) -> RunResult:
        protein = read_protein(inputs.params)
        smiles, molecule = read_ligand_smiles(inputs_sequence=inputs.sequence, params=inputs.params)
        params = _read_params(inputs.params)
        stem = file_stem(inputs.name)
        workdir.mkdir(parents=True, exist_ok=True)

        with self._lock:
            started = time.perf_counter()
            progress("inference", 0.0)
            receptor_path = workdir / RECEPTOR_FILE
            receptor_path.write_text(_prepare_receptor(protein))
            ligand_pdbqt = _prepare_ligand(molecule, seed=params.seed)
            center, size = _box(protein=protein, params=params)
            prepare_s = time.perf_counter() - started

            docking_started = time.perf_counter()
            docker = vina.Vina(sf_name="vina", cpu=self.cpus, seed=params.seed, verbosity=0)
            docker.set_receptor(str(receptor_path))
            docker.set_ligand_from_string(ligand_pdbqt)
            try:
                docker.compute_vina_maps(center=list(center), box_size=list(size))
            except RuntimeError as error:
                raise RunnerError(f"Vina could not set up the search box: {error}") from None
            progress("inference", 0.2)
            try:
                docker.dock(exhaustiveness=params.exhaustiveness, n_poses=params.num_poses)
            except RuntimeError as error:
                raise RunnerError(f"Vina could not dock this ligand: {error}") from None
            energies = docker.energies(n_poses=params.num_poses)
            poses_pdbqt = docker.poses(n_poses=params.num_poses)
            progress("inference", 1.0)
            docking_s = time.perf_counter() - docking_started

        writing_started = time.perf_counter()
        progress("writing_outputs", None)
        poses = _poses_from_pdbqt(poses_pdbqt)
        if poses.GetNumConformers() == 0:
            raise RunnerError("Vina found no pose for this ligand in the search box")
        affinities = [round(float(row[0]), 3) for row in energies[: poses.GetNumConformers()]]
        samples = [
            {"index": rank, "rank": rank + 1, "affinity_kcal_mol": affinity}
            for rank, affinity in enumerate(affinities)
        ]
        summary: dict[str, Any] = {
            "best_affinity_kcal_mol": affinities[0],
            "num_poses": len(affinities),
            "samples": samples,
            "best_sample": 0,
        }
        poses_path = workdir / POSES_FILE
        _write_poses(poses=poses, affinities=affinities, smiles=smiles, path=poses_path)
        complex_name = f"{stem}_complex.pdb"
        complex_path = workdir / complex_name
        complex_path.write_text(complex_pdb(protein=protein, ligand=poses, conformer_id=0))
        confidence_path = workdir / CONFIDENCE_FILE
        box = {
            "center": [round(value, 3) for value in center],
            "size": [round(value, 3) for value in size],
        }
        confidence_path.write_text(
            json.dumps({**summary, "ligand_smiles": smiles, "box": box, "seed": params.seed})
        )
        write_s = time.perf_counter() - writing_started

        return RunResult(
            files=[
                OutputFile(
                    name=complex_name,
                    path=complex_path,
                    content_type="chemical/x-pdb",
                    role="structure",
                ),
                OutputFile(
                    name=POSES_FILE,
                    path=poses_path,
                    content_type="chemical/x-mdl-sdfile",
                    role="structure",
                ),
                OutputFile(
                    name=RECEPTOR_FILE,
                    path=receptor_path,
                    content_type="text/plain",
                    role="structure",
                ),
                OutputFile(
                    name=CONFIDENCE_FILE,
                    path=confidence_path,
                    content_type="application/json",
                    role="confidence",
                ),
            ],
            primary_file=complex_name,
            summary=summary,
            metadata={
                "model_id": self.model_id,
                "weights": None,
                "untrained": False,
                "device": "cpu",
                "params": {
                    "exhaustiveness": params.exhaustiveness,
                    "num_poses": params.num_poses,
                    "seed": params.seed,
                    "box": box,
                },
                "versions": {
                    "vina": vina.__version__,
                    "meeko": meeko.__version__,
                    "rdkit": rdBase.rdkitVersion,
                    "gemmi": gemmi.__version__,
                },
                "timings": {
                    "prepare_s": round(prepare_s, 3),
                    "docking_s": round(docking_s, 3),
                    "write_s": round(write_s, 3),
                },
            },
        )


def _read_params(params: dict[str, Any]) -> VinaParams:
    """The job's params as Vina uses them. Their rules (ranges, defaults, the box's axes going
    together) are the registry's and apps.jobs.catalog's alone: checked at submission; a direct
    call (a bench, a test) gets the registry's defaults here."""
    filled = MODELS["vina"].params_with_defaults(params)
    seed = filled.get("seed")
    if seed is None:
        # Vina would draw its own seed and never report it; draw one here so the job records it.
        seed = random.randint(1, int(MODELS["vina"].param("seed").maximum or 1))
    return VinaParams(
        center=_axes(filled, "center"),
        size=_axes(filled, "size"),
        exhaustiveness=filled["exhaustiveness"],
        num_poses=filled["num_poses"],
        seed=seed,
    )


def _axes(params: dict[str, Any], prefix: str) -> tuple[float, float, float] | None:
    values = [params.get(f"{prefix}_{axis}") for axis in _AXES]
    if any(value is None for value in values):
        return None
    return (float(values[0]), float(values[1]), float(values[2]))


def _box(
    *, protein: gemmi.Structure, params: VinaParams
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    if params.center is not None:
        size = params.size or (DEFAULT_BOX_SIZE_AROUND_CENTER,) * 3
        return params.center, size
    coordinates = np.array(
        [atom.pos.tolist() for chain in protein[0] for residue in chain for atom in residue]
    )
    low, high = coordinates.min(axis=0), coordinates.max(axis=0)
    center = tuple(float(value) for value in (low + high) / 2)
    size = params.size or tuple(
        float(value) for value in np.minimum(high - low + BOX_MARGIN, MAX_DEFAULT_BOX_SIZE)
    )
    return center, size  # type: ignore[return-value]


def _prepare_receptor(protein: gemmi.Structure) -> str:
    templates = ResidueChemTemplates.create_from_defaults()
    try:
        # allow_bad_res: residues that match no template (odd names, missing atoms) are left
        # out of the receptor instead of failing the job.
        polymer = Polymer.from_pdb_string(
            protein_pdb_text(protein), templates, MoleculePreparation(), allow_bad_res=True
        )
        rigid, _flexible = PDBQTWriterLegacy.write_from_polymer(polymer)
    except (RuntimeError, ValueError, KeyError) as error:
        raise RunnerError(f"meeko could not prepare the protein as a receptor: {error}") from None
    if not any(line.startswith("ATOM") for line in rigid.splitlines()):
        raise RunnerError("meeko kept no atoms of the protein: no residue matched a template")
    receptor: str = rigid
    return receptor


def _prepare_ligand(molecule: Chem.Mol, *, seed: int) -> str:
    with_hydrogens = Chem.AddHs(molecule)
    embed = AllChem.ETKDGv3()
    embed.randomSeed = seed
    if AllChem.EmbedMolecule(with_hydrogens, embed) != 0:
        raise RunnerError("RDKit could not generate a 3D conformer for the ligand")
    if AllChem.MMFFHasAllMoleculeParams(with_hydrogens):
        AllChem.MMFFOptimizeMolecule(with_hydrogens)
    try:
        setups = MoleculePreparation().prepare(with_hydrogens)
    except RuntimeError as error:
        raise RunnerError(f"meeko could not prepare the ligand: {error}") from None
    pdbqt, ok, error_message = PDBQTWriterLegacy.write_string(setups[0])
    if not ok:
        raise RunnerError(f"meeko could not write the ligand: {error_message.strip()}")
    ligand: str = pdbqt
    return ligand


def _poses_from_pdbqt(poses_pdbqt: str) -> Chem.Mol:
    """The docked poses as one RDKit molecule with a conformer per pose, best first."""
    pdbqt = PDBQTMolecule(poses_pdbqt, is_dlg=False, skip_typing=True)
    molecules = RDKitMolCreate.from_pdbqt_mol(pdbqt)
    if not molecules or molecules[0] is None:
        raise RunnerError("meeko could not rebuild the docked poses as molecules")
    poses: Chem.Mol = molecules[0]
    return poses


def _write_poses(*, poses: Chem.Mol, affinities: list[float], smiles: str, path: Path) -> None:
    writer = Chem.SDWriter(str(path))
    try:
        for rank, (conformer, affinity) in enumerate(
            zip(poses.GetConformers(), affinities, strict=False), start=1
        ):
            pose = Chem.Mol(poses)
            pose.SetProp("_Name", f"pose_{rank}")
            pose.SetIntProp("rank", rank)
            pose.SetProp("affinity_kcal_mol", f"{affinity:.3f}")
            pose.SetProp("smiles", smiles)
            writer.write(pose, confId=conformer.GetId())
    finally:
        writer.close()
