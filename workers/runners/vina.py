"""AutoDock Vina: a protein and a ligand (SMILES, SDF or MOL2) in, ranked poses with scores out.

The receptor and the ligand are prepared with meeko (the Vina authors' preparation tool): the
receptor cropped to the search box, its metal ions and known cofactors kept by default (every
hetero residue, or none, on request), with templates built locally from the packaged Chemical
Component Dictionary (biotite's copy; meeko would otherwise download them from the PDB inside
the job). The ligand is protonated at the job's pH
(dimorphite-dl) and gets its starting conformers from RDKit (ETKDG, MMFF): several when it has
non-aromatic rings, whose conformations Vina cannot change. Vina runs on the CPU.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers, rdMolAlign

from apps.jobs.chemistry import LigandFormatError, ligand_from_text, residue_label
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
    Ligand,
    complex_pdb,
    file_stem,
    pose_outputs,
    protein_pdb_text,
    read_ligand,
    read_protein,
)

RECEPTOR_FILE = "receptor.pdbqt"
# The default box covers the whole protein plus this margin, up to MAX_DEFAULT_BOX_SIZE per
# side; a larger protein gets a box of that size around its centre (give a box to aim it).
BOX_MARGIN = 10.0
MAX_DEFAULT_BOX_SIZE = 30.0
DEFAULT_BOX_SIZE_AROUND_CENTER = 20.0
# Residues with an atom within this distance of the box stay in the receptor: Vina's
# interactions reach 8 Å, so nothing farther can touch a pose inside the box.
CROP_MARGIN = 10.0
# Starting conformers for ligands with non-aromatic rings: distinct ring conformations (ring
# atoms differing by more than RING_RMSD after alignment), at most MAX_START_CONFORMERS.
MAX_START_CONFORMERS = 3
CANDIDATE_CONFORMERS = 30
RING_RMSD = 0.3
# Poses from different starting conformers closer than this (heavy atoms) are one pose.
DUPLICATE_POSE_RMSD = 1.0
_AXES = ("x", "y", "z")
MAX_UNBUILDABLE_RESIDUES = 20
MAX_VARIANTS = 64
# Ionized groups whose state at physiological pH nobody disputes: carboxylates, protonated
# aliphatic amines (not amides, anilines, sulfonamides or aminals), and amidinium and
# guanidinium ions (pKa 11-13; not N-acyl or N-sulfonyl ones, nor aromatic rings). The first
# atom of each pattern is the charged one.
_TRUSTED_IONS = tuple(
    Chem.MolFromSmarts(smarts)
    for smarts in (
        "[O-][CX3]=O",
        "[NX4+;H1,H2,H3;!$(N[!#6;!#1]);!$(N[a]);!$(N[CX3]);!$(N[CX4][NX3,NX4+,OX2])]",
        "[NX3+;!$(N[CX3]=[O,S]);!$(N[SX4])]=[CX3]([#6,#7])[NX3;!$(N[CX3]=[O,S]);!$(N[SX4])]",
    )
)
# Hetero residues kept by `keep_hetero: "cofactors"` (besides metal ions), by CCD name: the
# cofactors and prosthetic groups that stay bound while an enzyme binds its ligands, so a
# docked ligand must meet them. Not nucleotides (ATP, ADP, GTP, AMP-PNP, ...), folates or
# quinones: they are substrates or ligands of the very sites people dock into (a kinase's ATP
# site); `keep_hetero: "all"` keeps them. docs/docking.md lists the same.
COFACTORS = frozenset(
    {
        # nicotinamide: NAD+, NADH, NADP+, NADPH
        *("NAD", "NAI", "NAP", "NDP"),
        # flavins: FAD, FADH2, FMN, FMNH2
        *("FAD", "FDA", "FMN", "FNR"),
        # hemes and other tetrapyrroles: heme b, c, a, b/c, as; siroheme; chlorophylls a, b;
        # bacteriochlorophyll a; factor 430; cobalamin, cyanocobalamin
        *("HEM", "HEC", "HEA", "HEB", "HAS", "SRM", "CLA", "CHL", "BCL", "F43", "B12", "CNC"),
        # S-adenosylmethionine and -homocysteine
        *("SAM", "SAH"),
        # pyridoxal and pyridoxamine phosphate, thiamine diphosphate, coenzyme A
        *("PLP", "PMP", "TPP", "TDP", "COA"),
        # biotin, lipoic acid, phosphopantetheine, tetrahydrobiopterin, molybdopterins, PQQ
        *("BTN", "LPA", "PNS", "H4B", "BH4", "MTE", "MGD", "PQQ"),
        # iron-sulfur clusters
        *("SF4", "FES", "F3S"),
    }
)
_UNBUILDABLE = re.compile(r"unable to build rdkit mol for residue (\S+) corresponding to key (\S+)")
_SPEC = MODELS["vina"]
_Item = TypeVar("_Item")
_templates_lock = threading.Lock()
# Local templates of hetero residues (name -> template dict or None), built once per process.
_hetero_templates: dict[str, dict[str, Any] | None] = {}


@dataclass(frozen=True, kw_only=True)
class VinaParams:
    center: tuple[float, float, float] | None
    size: tuple[float, float, float] | None
    exhaustiveness: int
    num_poses: int
    seed: int
    scoring: str
    ranking: str
    ph: float
    keep_hetero: str
    pocket_ligand_sdf: str | None
    pocket_residues: list[str] | None
    pocket_margin: float


@dataclass
class Receptor:
    pdbqt: str
    kept_hetero: list[str] = field(default_factory=list)
    dropped: list[dict[str, str]] = field(default_factory=list)
    crop: dict[str, Any] = field(default_factory=dict)


class VinaRunner:
    model_id = "vina"

    def __init__(self, *, cpus: int = 0, max_residues: int | None = None) -> None:
        # 0: all the cores of the machine, as Vina defines it.
        self.cpus = cpus
        # The length limit applies to the receptor cropped to the box (None: no limit).
        self.max_residues = max_residues
        # One docking at a time: Vina already uses every core given to it.
        self._lock = threading.Lock()

    def load(self) -> None:
        """Nothing to load: Vina's scoring function has no weights to keep resident."""

    def resident_info(self) -> dict[str, Any]:
        # Vina's scoring function is built in: no weights, CPU only.
        return {"device": "cpu", "memory_bytes": None, "weights": None}

    def run(self, *, inputs: JobInputs, workdir: Path, progress: ProgressCallback) -> RunResult:
        params = _read_params(inputs.params)
        # Hetero residues reach the receptor preparation, which keeps or drops each, saying why.
        protein = read_protein(inputs.params, keep_hetero=True)
        ligand = read_ligand(inputs_sequence=inputs.sequence, params=inputs.params)
        stem = file_stem(inputs.name)
        workdir.mkdir(parents=True, exist_ok=True)

        with self._lock:
            started = time.perf_counter()
            progress("inference", 0.0)
            center, size = _box(protein=protein, params=params)
            cropped, crop = _crop(protein, center=center, size=size)
            if self.max_residues is not None and crop["residues_kept"] > self.max_residues:
                raise RunnerError(
                    f"the receptor has {crop['residues_kept']} residues within "
                    f"{CROP_MARGIN:g} Å of the box; vina accepts at most {self.max_residues}: "
                    "give a smaller box"
                )
            receptor = _prepare_receptor(cropped, keep_hetero=params.keep_hetero)
            receptor.crop = crop
            receptor_path = workdir / RECEPTOR_FILE
            receptor_path.write_text(receptor.pdbqt)
            prepared, ligand_notes = _prepare_ligand(ligand, ph=params.ph, seed=params.seed)
            prepare_s = time.perf_counter() - started

            docking_started = time.perf_counter()
            docker = _vina(params.scoring, cpus=self.cpus, seed=params.seed)
            docker.set_receptor(str(receptor_path))
            _maps(docker, center=center, size=size)
            found: list[tuple[float, Chem.Mol, str]] = []
            for index, ligand_pdbqt in enumerate(prepared):
                progress("inference", 0.1 + 0.8 * index / len(prepared))
                docker.set_ligand_from_string(ligand_pdbqt)
                try:
                    docker.dock(exhaustiveness=params.exhaustiveness, n_poses=params.num_poses)
                except RuntimeError as error:
                    raise RunnerError(f"Vina could not dock this ligand: {error}") from None
                energies = docker.energies(n_poses=params.num_poses)
                poses_pdbqt = docker.poses(n_poses=params.num_poses)
                found += zip(
                    (float(row[0]) for row in energies),
                    _poses_from_pdbqt(poses_pdbqt),
                    _pdbqt_models(poses_pdbqt),
                    strict=False,
                )
            if not found:
                raise RunnerError("Vina found no pose for this ligand in the search box")
            ranked = _distinct_poses(found, limit=params.num_poses)
            other = next(name for name in _SPEC.param("scoring").choices if name != params.scoring)
            rescored = _rescore(
                [model for _score, _pose, model in ranked],
                scoring=other,
                receptor_path=receptor_path,
                center=center,
                size=size,
                cpus=self.cpus,
                seed=params.seed,
            )
            if params.ranking == "consensus":
                order = _consensus_order([score for score, _pose, _model in ranked], rescored)
                ranked = [ranked[index] for index in order]
                rescored = [rescored[index] for index in order]
            progress("inference", 1.0)
            docking_s = time.perf_counter() - docking_started

        writing_started = time.perf_counter()
        progress("writing_outputs", None)
        scores = [round(score, 3) for score, _pose, _model in ranked]
        samples = [
            {
                "index": rank,
                "rank": rank + 1,
                "affinity_kcal_mol": score,
                f"{other}_score": round(rescore, 3),
            }
            for rank, (score, rescore) in enumerate(zip(scores, rescored, strict=True))
        ]
        warnings = ligand.warnings + ligand_notes["warnings"]
        summary: dict[str, Any] = {
            "best_affinity_kcal_mol": min(scores),
            "scoring": params.scoring,
            "ranking": params.ranking,
            "num_poses": len(scores),
            "samples": samples,
            "best_sample": 0,
            "warnings": warnings,
            "receptor": {
                "kept_hetero": receptor.kept_hetero,
                "dropped": receptor.dropped,
                "crop": receptor.crop,
            },
            "ligand": {
                "smiles": ligand.smiles,
                "source": ligand.source,
                "protonated_smiles": ligand_notes["protonated_smiles"],
                "ph": params.ph,
                "start_conformers": len(prepared),
            },
        }
        poses = [pose for _score, pose, _model in ranked]
        poses_path = workdir / POSES_FILE
        _write_poses(poses=poses, samples=samples, smiles=ligand.smiles, path=poses_path)
        complex_name = f"{stem}_complex.pdb"
        complex_path = workdir / complex_name
        complex_path.write_text(complex_pdb(protein=protein, ligand=poses[0]))
        box = {
            "center": [round(value, 3) for value in center],
            "size": [round(value, 3) for value in size],
        }
        confidence = confidence_write(
            workdir, {**summary, "ligand_smiles": ligand.smiles, "box": box, "seed": params.seed}
        )
        write_s = time.perf_counter() - writing_started

        return RunResult(
            files=[
                *pose_outputs(
                    complex_name=complex_name, complex_path=complex_path, poses_path=poses_path
                ),
                OutputFile(
                    name=RECEPTOR_FILE,
                    path=receptor_path,
                    content_type="text/plain",
                    role="structure",
                ),
                confidence,
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
                    "scoring": params.scoring,
                    "ranking": params.ranking,
                    "box": box,
                },
                "versions": {
                    "vina": vina.__version__,
                    "meeko": meeko.__version__,
                    "rdkit": rdBase.rdkitVersion,
                    # gemmi's bundled stubs leave out its __version__.
                    "gemmi": gemmi.__version__,  # type: ignore[attr-defined]
                },
                "timings": {
                    "prepare_s": round(prepare_s, 3),
                    "docking_s": round(docking_s, 3),
                    "write_s": round(write_s, 3),
                },
            },
        )


def _read_params(params: dict[str, Any]) -> VinaParams:
    """The job's params as Vina uses them. Their rules (ranges, defaults, choices, the box's
    axes going together, one pocket) are the registry's and apps.jobs.catalog's alone: checked
    at submission; a direct call (a bench, a test) gets the registry's defaults here."""
    filled = _SPEC.params_with_defaults(params)
    seed = filled.get("seed")
    if seed is None:
        # Vina would draw its own seed and never report it; draw one here so the job records it.
        seed = random.randint(1, int(_SPEC.param("seed").maximum or 1))
    return VinaParams(
        center=_axes(filled, "center"),
        size=_axes(filled, "size"),
        exhaustiveness=filled["exhaustiveness"],
        num_poses=filled["num_poses"],
        seed=seed,
        scoring=filled["scoring"],
        ranking=filled["ranking"],
        ph=float(filled["ph"]),
        # true/false from a direct caller (a bench, an old test) read as the API reads them.
        keep_hetero=_SPEC.param("keep_hetero").check(filled["keep_hetero"]),
        pocket_ligand_sdf=filled.get("pocket_ligand_sdf"),
        pocket_residues=filled.get("pocket_residues"),
        pocket_margin=float(filled["pocket_margin"]),
    )


def _axes(params: dict[str, Any], prefix: str) -> tuple[float, float, float] | None:
    values: list[Any] = [params.get(f"{prefix}_{axis}") for axis in _AXES]
    if any(value is None for value in values):
        return None
    return (float(values[0]), float(values[1]), float(values[2]))


def _box(
    *, protein: gemmi.Structure, params: VinaParams
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    if params.center is not None:
        size = params.size or (DEFAULT_BOX_SIZE_AROUND_CENTER,) * 3
        return params.center, size
    if params.pocket_ligand_sdf is not None:
        try:
            reference = ligand_from_text(
                params.pocket_ligand_sdf, file_format="sdf", require_3d=True
            )
        except LigandFormatError as error:
            raise RunnerError(f"pocket_ligand_sdf: {error}") from None
        heavy = [atom.GetIdx() for atom in reference.GetAtoms() if atom.GetAtomicNum() > 1]
        return _box_around(
            reference.GetConformer().GetPositions()[heavy], margin=params.pocket_margin
        )
    if params.pocket_residues is not None:
        return _box_around(
            _residue_coordinates(protein, params.pocket_residues), margin=params.pocket_margin
        )
    coordinates = _coordinates(protein)
    low, high = coordinates.min(axis=0), coordinates.max(axis=0)
    middle = (low + high) / 2
    extent = np.minimum(high - low + BOX_MARGIN, MAX_DEFAULT_BOX_SIZE)
    center = (float(middle[0]), float(middle[1]), float(middle[2]))
    size = params.size or (float(extent[0]), float(extent[1]), float(extent[2]))
    return center, size


def _box_around(
    coordinates: np.ndarray, *, margin: float
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    low, high = coordinates.min(axis=0), coordinates.max(axis=0)
    # A pocket box is no larger than the largest box a request may give.
    largest = float(_SPEC.param("size_x").maximum or 0)
    middle = (low + high) / 2
    extent = np.minimum(high - low + 2 * margin, largest)
    center = (float(middle[0]), float(middle[1]), float(middle[2]))
    size = (float(extent[0]), float(extent[1]), float(extent[2]))
    return center, size


def _residue_coordinates(protein: gemmi.Structure, residues: list[str]) -> np.ndarray:
    wanted = set(residues)
    found: set[str] = set()
    coordinates = []
    for chain in protein[0]:
        for residue in chain:
            key = residue_label(chain, residue)
            if key in wanted:
                found.add(key)
                coordinates += [atom.pos.tolist() for atom in residue]
    missing = sorted(wanted - found)
    if missing:
        raise RunnerError(f"pocket_residues: {', '.join(missing[:5])} not in the protein")
    return np.array(coordinates)


def _coordinates(structure: gemmi.Structure) -> np.ndarray:
    return np.array(
        [atom.pos.tolist() for chain in structure[0] for residue in chain for atom in residue]
    )


def _crop(
    protein: gemmi.Structure,
    *,
    center: tuple[float, float, float],
    size: tuple[float, float, float],
) -> tuple[gemmi.Structure, dict[str, Any]]:
    """The protein without the residues farther than CROP_MARGIN from the box."""
    half = np.array(size) / 2 + CROP_MARGIN
    middle = np.array(center)
    cropped = protein.clone()
    before = kept = 0
    for chain in cropped[0]:
        for index in reversed(range(len(chain))):
            residue = chain[index]
            near = np.all(np.abs(np.array([a.pos.tolist() for a in residue]) - middle) <= half, 1)
            if _is_amino_acid(residue.name):
                before += 1
                kept += bool(near.any())
            if not near.any():
                del chain[index]
    cropped.remove_empty_chains()
    if cropped[0].count_atom_sites() == 0:
        raise RunnerError("no protein atom lies within the search box: check the box")
    return cropped, {
        "residues_before": before,
        "residues_kept": kept,
        "residues_cropped": before - kept,
        "margin_a": CROP_MARGIN,
    }


def _is_amino_acid(name: str) -> bool:
    info = gemmi.find_tabulated_residue(name)
    return bool(info and info.is_amino_acid())


def _vina(scoring: str, *, cpus: int, seed: int) -> vina.Vina:
    return vina.Vina(sf_name=scoring, cpu=cpus, seed=seed, verbosity=0)


def _maps(
    docker: vina.Vina, *, center: tuple[float, float, float], size: tuple[float, float, float]
) -> None:
    try:
        docker.compute_vina_maps(center=list(center), box_size=list(size))
    except RuntimeError as error:
        raise RunnerError(f"Vina could not set up the search box: {error}") from None


def _prepare_receptor(protein: gemmi.Structure, *, keep_hetero: str) -> Receptor:
    templates = ResidueChemTemplates.create_from_defaults()
    known = set(templates.residue_templates) | set(templates.ambiguous)
    receptor = Receptor(pdbqt="")
    structure = protein.clone()
    for chain in structure[0]:
        for index in reversed(range(len(chain))):
            residue = chain[index]
            name = residue.name
            polymer = residue.entity_type == gemmi.EntityType.Polymer
            if polymer and name in known:
                continue
            label = f"{chain.name}:{residue.seqid.num} {name}"
            reason = _hetero_refusal(residue, keep_hetero=keep_hetero, polymer=polymer)
            if reason is None and name not in known:
                template = _hetero_template(name)
                if template is None:
                    reason = "not in the Chemical Component Dictionary, or meeko cannot type it"
                else:
                    templates.add_dict(
                        {"residue_templates": {name: template}, "ambiguous": {name: [name]}}
                    )
                    known.add(name)
            if reason is None:
                if not polymer:
                    receptor.kept_hetero.append(label)
                continue
            # meeko downloads a template for any residue it does not know: it never sees one.
            receptor.dropped.append({"residue": label, "reason": reason})
            del chain[index]
    structure.remove_empty_chains()
    polymer, rigid = _polymer(structure, templates=templates, dropped=receptor.dropped)
    for residue_id, monomer in polymer.get_ignored_monomers().items():
        receptor.dropped.append(
            {
                "residue": f"{residue_id} {monomer.input_resname}",
                "reason": "matches no template (missing or extra atoms)",
            }
        )
    if not any(line.startswith("ATOM") for line in rigid.splitlines()):
        raise RunnerError("meeko kept no atoms of the protein: no residue matched a template")
    receptor.kept_hetero = [
        name
        for name in receptor.kept_hetero
        if name.split()[0] not in polymer.get_ignored_monomers()
    ]
    receptor.pdbqt = rigid
    return receptor


def _hetero_refusal(residue: gemmi.Residue, *, keep_hetero: str, polymer: bool) -> str | None:
    """Why `keep_hetero` drops this residue (a ligand, ion or modified residue of the chain
    unknown to meeko), or None when it is kept."""
    if keep_hetero == "none":
        return "hetero residue (keep_hetero is none)"
    if keep_hetero == "all" or polymer:
        return None
    metal = all(atom.element.is_metal for atom in residue)
    if metal or residue.name in COFACTORS:
        return None
    return "not a cofactor or metal (keep_hetero is cofactors)"


def _polymer(
    structure: gemmi.Structure, *, templates: ResidueChemTemplates, dropped: list[dict[str, str]]
) -> tuple[Polymer, str]:
    """meeko's receptor; a residue meeko cannot even build a molecule from (distorted
    geometry: it perceives bonds from distances) is removed and listed, and meeko tries again."""
    for _attempt in range(MAX_UNBUILDABLE_RESIDUES + 1):
        try:
            # allow_bad_res: residues that match no template (missing heavy atoms, say) are left
            # out of the receptor instead of failing the job; they are listed by the caller.
            polymer = Polymer.from_pdb_string(
                protein_pdb_text(structure), templates, MoleculePreparation(), allow_bad_res=True
            )
            rigid, _flexible = PDBQTWriterLegacy.write_from_polymer(polymer)
            return polymer, rigid
        except (RuntimeError, ValueError, KeyError) as error:
            unbuildable = _UNBUILDABLE.search(str(error))
            if unbuildable is None:
                raise RunnerError(
                    f"meeko could not prepare the protein as a receptor: {error}"
                ) from None
            name, key = unbuildable.group(1), unbuildable.group(2)
            chain_name, number = key.split(":", 1)
            chain = structure[0][chain_name]
            for index in reversed(range(len(chain))):
                residue = chain[index]
                if f"{residue.seqid.num}{residue.seqid.icode.strip()}" == number:
                    del chain[index]
            dropped.append(
                {
                    "residue": f"{key} {name}",
                    "reason": "meeko cannot build it from its coordinates (distorted geometry)",
                }
            )
    raise RunnerError(
        f"meeko could not build more than {MAX_UNBUILDABLE_RESIDUES} residues of the receptor"
    )


def _hetero_template(name: str) -> dict[str, Any] | None:
    """meeko's residue template for a hetero residue from the Chemical Component Dictionary
    packaged with biotite, built the way meeko builds the ones it downloads."""
    with _templates_lock:
        if name not in _hetero_templates:
            _hetero_templates[name] = _build_hetero_template(name)
        return _hetero_templates[name]


def _build_hetero_template(name: str) -> dict[str, Any] | None:
    from biotite.structure.info.ccd import get_from_ccd
    from meeko.chemtempgen import (
        ChemicalComponent,
        ChemicalComponent_LoggingControler,
        acidic_proton_loc_canonical,
        export_chem_templates_to_json,
    )

    atoms = get_from_ccd("chem_comp_atom", name)
    if atoms is None:
        return None
    columns = ("atom_id", "type_symbol", "charge", "pdbx_leaving_atom_flag")
    lines = [f"data_{name}", "loop_", *(f"_chem_comp_atom.{column}" for column in columns)]
    values = [atoms[column].as_array(str) for column in columns]
    lines += [
        " ".join(gemmi.cif.quote(str(value)) for value in row) for row in zip(*values, strict=True)
    ]
    bonds = get_from_ccd("chem_comp_bond", name)
    if bonds is not None:
        bond_columns = ("atom_id_1", "atom_id_2", "value_order")
        lines += ["loop_", *(f"_chem_comp_bond.{column}" for column in bond_columns)]
        values = [bonds[column].as_array(str) for column in bond_columns]
        lines += [
            " ".join(gemmi.cif.quote(str(value)) for value in row)
            for row in zip(*values, strict=True)
        ]
    try:
        with (
            tempfile.NamedTemporaryFile("w", suffix=".cif") as cif,
            ChemicalComponent_LoggingControler(),
        ):
            cif.write("\n".join(lines) + "\n")
            cif.flush()
            component = ChemicalComponent.from_cif(cif.name, name)
            if component is None:
                return None
            component = component.make_canonical(acidic_proton_loc=acidic_proton_loc_canonical)
            component = component.make_pretty_smiles()
            component.ResidueTemplate_check()
            exported = json.loads(export_chem_templates_to_json([component]))
    except Exception:  # any failure means: no template, the residue is dropped
        return None
    template: dict[str, Any] = exported["residue_templates"][component.resname]
    return template


def _prepare_ligand(ligand: Ligand, *, ph: float, seed: int) -> tuple[list[str], dict[str, Any]]:
    """The ligand's starting conformers as PDBQT, and what was done to it."""
    from dimorphite_dl import protonate_smiles

    notes: dict[str, Any] = {"warnings": [], "protonated_smiles": None}
    molecule = ligand.molecule
    has_hydrogens = any(atom.GetAtomicNum() == 1 for atom in molecule.GetAtoms())
    if ligand.source == "smiles" or not has_hydrogens:
        smiles = Chem.MolToSmiles(Chem.RemoveHs(molecule))
        try:
            variants = protonate_smiles(smiles, ph_min=ph, ph_max=ph, max_variants=MAX_VARIANTS)
        except Exception:  # dimorphite-dl fails on odd chemistry; dock as given
            variants = []
        protonated = _plausible_protonation(molecule, variants)
        if protonated is None:
            notes["warnings"].append(
                f"no protonation state at pH {ph} was trusted: the ligand was docked as given"
            )
        else:
            molecule = protonated
            notes["protonated_smiles"] = Chem.MolToSmiles(protonated)
    else:
        notes["warnings"].append("the ligand file has hydrogens: its protonation was kept")
    with_hydrogens = Chem.AddHs(molecule, addCoords=True)
    conformers = _start_conformers(with_hydrogens, seed=seed)
    pdbqts = []
    for conformer_id in conformers:
        single = Chem.Mol(with_hydrogens, confId=conformer_id)
        try:
            setups = MoleculePreparation().prepare(single)
        except RuntimeError as error:
            raise RunnerError(f"meeko could not prepare the ligand: {error}") from None
        pdbqt, ok, error_message = PDBQTWriterLegacy.write_string(setups[0])
        if not ok:
            raise RunnerError(f"meeko could not write the ligand: {error_message.strip()}")
        pdbqts.append(pdbqt)
    return pdbqts, notes


def _plausible_protonation(molecule: Chem.Mol, variants: list[str]) -> Chem.Mol | None:
    """Of dimorphite-dl's states at the pH, the one with the most charges that are all on
    carboxylic acids and aliphatic amines (or the input's own); None when none qualifies.
    dimorphite-dl alone also ionizes phenols, uracil NHs and aminals at pH 7.4, which made the
    re-docking bench worse (docs/benchmarks.md)."""
    given = sum(1 for atom in molecule.GetAtoms() if atom.GetFormalCharge())
    best: tuple[int, Chem.Mol] | None = None
    for variant in variants:
        candidate = Chem.MolFromSmiles(variant)
        if candidate is None:
            continue
        trusted = {
            match[0]
            for pattern in _TRUSTED_IONS
            for match in candidate.GetSubstructMatches(pattern)
        }
        charged = [atom.GetIdx() for atom in candidate.GetAtoms() if atom.GetFormalCharge()]
        if len(charged) - len(set(charged) & trusted) > given:
            continue
        if best is None or len(charged) > best[0]:
            best = (len(charged), candidate)
    return best[1] if best else None


def _start_conformers(molecule: Chem.Mol, *, seed: int) -> list[int]:
    """Conformer ids of distinct ring conformations (one for a ligand without non-aromatic
    rings: Vina searches its torsions itself)."""
    ring_atoms = sorted(
        {
            index
            for ring in molecule.GetRingInfo().AtomRings()
            if not all(molecule.GetAtomWithIdx(index).GetIsAromatic() for index in ring)
            for index in ring
        }
    )
    embed = rdDistGeom.ETKDGv3()
    # RDKit's generated stubs give the property setter no types.
    embed.randomSeed = seed  # type: ignore[assignment]
    count = CANDIDATE_CONFORMERS if ring_atoms else 1
    conformer_ids = list(rdDistGeom.EmbedMultipleConfs(molecule, count, embed))
    if not conformer_ids:
        raise RunnerError("RDKit could not generate a 3D conformer for the ligand")
    energies: dict[int, float] = {}
    if rdForceFieldHelpers.MMFFHasAllMoleculeParams(molecule):
        results = rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(molecule)
        energies = {
            cid: energy for cid, (_converged, energy) in zip(conformer_ids, results, strict=True)
        }
    if not ring_atoms:
        return conformer_ids[:1]
    heavy_ring = [
        index for index in ring_atoms if molecule.GetAtomWithIdx(index).GetAtomicNum() > 1
    ]

    def ring_rmsd(conformer_id: int, other: int) -> float:
        return float(
            rdMolAlign.AlignMol(
                Chem.Mol(molecule),
                molecule,
                prbCid=conformer_id,
                refCid=other,
                atomMap=[(index, index) for index in heavy_ring],
            )
        )

    return _distinct(
        sorted(conformer_ids, key=lambda cid: energies.get(cid, 0.0)),
        distance=ring_rmsd,
        threshold=RING_RMSD,
        limit=MAX_START_CONFORMERS,
    )


def _distinct(
    items: list[_Item], *, distance: Callable[[_Item, _Item], float], threshold: float, limit: int
) -> list[_Item]:
    """The first `limit` items, in order, that lie farther than `threshold` from every earlier
    one kept."""
    kept: list[_Item] = []
    for item in items:
        if all(distance(item, other) > threshold for other in kept):
            kept.append(item)
            if len(kept) == limit:
                break
    return kept


def _pdbqt_models(poses_pdbqt: str) -> list[str]:
    """Each pose of Vina's multi-model PDBQT as a ligand PDBQT of its own."""
    models: list[str] = []
    current: list[str] = []
    for line in poses_pdbqt.splitlines(keepends=True):
        if line.startswith("MODEL"):
            current = []
        elif line.startswith("ENDMDL"):
            models.append("".join(current))
        else:
            current.append(line)
    return models


def _poses_from_pdbqt(poses_pdbqt: str) -> list[Chem.Mol]:
    """The docked poses as RDKit molecules, best first."""
    pdbqt = PDBQTMolecule(poses_pdbqt, is_dlg=False, skip_typing=True)
    molecules = RDKitMolCreate.from_pdbqt_mol(pdbqt)
    if not molecules or molecules[0] is None:
        raise RunnerError("meeko could not rebuild the docked poses as molecules")
    poses: Chem.Mol = molecules[0]
    return [Chem.Mol(poses, confId=conformer.GetId()) for conformer in poses.GetConformers()]


def _distinct_poses(
    found: list[tuple[float, Chem.Mol, str]], *, limit: int
) -> list[tuple[float, Chem.Mol, str]]:
    """The best `limit` poses by score, a pose close to a better one (found from another
    starting conformer) counted once."""

    def heavy_rmsd(entry: tuple[float, Chem.Mol, str], other: tuple[float, Chem.Mol, str]) -> float:
        heavy = [atom.GetIdx() for atom in entry[1].GetAtoms() if atom.GetAtomicNum() > 1]
        positions = entry[1].GetConformer().GetPositions()[heavy]
        others = other[1].GetConformer().GetPositions()[heavy]
        return float(np.sqrt(((positions - others) ** 2).sum(1).mean()))

    return _distinct(
        sorted(found, key=lambda item: item[0]),
        distance=heavy_rmsd,
        threshold=DUPLICATE_POSE_RMSD,
        limit=limit,
    )


def _rescore(
    models: list[str],
    *,
    scoring: str,
    receptor_path: Path,
    center: tuple[float, float, float],
    size: tuple[float, float, float],
    cpus: int,
    seed: int,
) -> list[float]:
    """Each pose's score under another scoring function, as it lies (no optimisation)."""
    scorer = _vina(scoring, cpus=cpus, seed=seed)
    scorer.set_receptor(str(receptor_path))
    _maps(scorer, center=center, size=size)
    scores = []
    for model in models:
        scorer.set_ligand_from_string(model)
        scores.append(float(scorer.score()[0]))
    return scores


def _consensus_order(scores: list[float], rescored: list[float]) -> list[int]:
    """Pose indices by mean rank under the docking function and the other one (ties: the
    docking function's order). Measured on the PoseBusters examples (docs/benchmarks.md)."""
    by_score = sorted(range(len(scores)), key=lambda index: scores[index])
    by_rescore = sorted(range(len(rescored)), key=lambda index: rescored[index])
    mean_rank = {index: (by_score.index(index) + by_rescore.index(index)) / 2 for index in by_score}
    return sorted(by_score, key=lambda index: (mean_rank[index], by_score.index(index)))


def _write_poses(
    *, poses: list[Chem.Mol], samples: list[dict[str, Any]], smiles: str, path: Path
) -> None:
    writer = Chem.SDWriter(str(path))
    try:
        for pose, sample in zip(poses, samples, strict=True):
            pose = Chem.Mol(pose)
            pose.SetProp("_Name", f"pose_{sample['rank']}")
            pose.SetIntProp("rank", sample["rank"])
            for key, value in sample.items():
                if key not in {"index", "rank"}:
                    pose.SetProp(key, f"{value:.3f}")
            pose.SetProp("smiles", smiles)
            writer.write(pose)
    finally:
        writer.close()
