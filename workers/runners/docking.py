"""What the docking runners share: reading a protein and a ligand, ranked pose files, and the
complex PDB (protein plus the top pose) that a docking job serves as its download."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gemmi
from rdkit import Chem, rdBase

from apps.jobs.chemistry import LIGAND_FILE_FORMATS, LigandFormatError, ligand_from_text
from workers.runners.base import OutputFile, RunnerError

LIGAND_RESIDUE = "LIG"
POSES_FILE = "poses.sdf"


@dataclass(frozen=True)
class Ligand:
    smiles: str
    # Hydrogens as given (none for SMILES); from SDF/MOL2 with the file's bond orders and 3D
    # stereo.
    molecule: Chem.Mol
    source: str
    warnings: list[str] = field(default_factory=list)


def undefined_stereo_warnings(molecule: Chem.Mol) -> list[str]:
    """A warning per stereocentre or stereo double bond the input leaves undefined: the docked
    ligand then has one stereoisomer picked at random."""
    warnings = []
    for info in Chem.FindPotentialStereo(Chem.RemoveHs(molecule)):
        if info.specified != Chem.StereoSpecified.Unspecified:
            continue
        if info.type == Chem.StereoType.Atom_Tetrahedral:
            warnings.append(
                f"undefined stereocentre at atom {info.centeredOn + 1}: one configuration was "
                "docked; give it in the SMILES (@/@@) to choose"
            )
        elif info.type == Chem.StereoType.Bond_Double:
            warnings.append(
                f"undefined double-bond stereo at bond {info.centeredOn + 1}: one isomer was "
                "docked; give it in the SMILES (/ and \\) to choose"
            )
    return warnings


def read_ligand(*, inputs_sequence: str, params: dict[str, Any]) -> Ligand:
    """The ligand of a docking job: params.ligand_sdf, params.ligand_mol2, or a SMILES
    (params.ligand_smiles, else the job's sequence)."""
    for name, file_format in LIGAND_FILE_FORMATS.items():
        text = params.get(name)
        if text is not None:
            try:
                molecule = ligand_from_text(text, file_format=file_format)
            except LigandFormatError as error:
                raise RunnerError(f"{name}: {error}") from None
            smiles = Chem.MolToSmiles(Chem.RemoveHs(molecule))
            return Ligand(
                smiles=smiles,
                molecule=molecule,
                source=file_format,
                warnings=undefined_stereo_warnings(molecule),
            )
    smiles, molecule = read_ligand_smiles(inputs_sequence=inputs_sequence, params=params)
    return Ligand(
        smiles=smiles,
        molecule=molecule,
        source="smiles",
        warnings=undefined_stereo_warnings(molecule),
    )


def read_protein(params: dict[str, Any], *, keep_hetero: bool = False) -> gemmi.Structure:
    """The protein of a docking job from `params.protein_pdb` (the PDB text). Waters always go;
    other hetero residues go too unless `keep_hetero` (the receptor preparation decides)."""
    text = params.get("protein_pdb")
    if not isinstance(text, str) or not text.strip():
        raise RunnerError("protein_pdb is required: the text of the protein's PDB file")
    try:
        structure = gemmi.read_pdb_string(text)
    except (RuntimeError, ValueError) as error:
        raise RunnerError(f"protein_pdb could not be parsed as PDB: {error}") from None
    structure.setup_entities()
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise RunnerError("protein_pdb contains no atoms")
    if keep_hetero:
        structure.remove_waters()
    else:
        structure.remove_ligands_and_waters()
    structure.remove_empty_chains()
    if structure[0].count_atom_sites() == 0:
        raise RunnerError("protein_pdb contains no protein atoms")
    return structure


def read_ligand_smiles(*, inputs_sequence: str, params: dict[str, Any]) -> tuple[str, Chem.Mol]:
    """The ligand's SMILES (params.ligand_smiles, else the job's sequence) and its molecule."""
    smiles = params.get("ligand_smiles") or inputs_sequence
    if not isinstance(smiles, str) or not smiles.strip():
        raise RunnerError("ligand_smiles is required: the ligand as a SMILES string")
    smiles = smiles.strip()
    rdBase.DisableLog("rdApp.*")
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None or molecule.GetNumAtoms() == 0:
        raise RunnerError(f"ligand_smiles {smiles!r} is not a valid SMILES string")
    return smiles, molecule


def protein_pdb_text(structure: gemmi.Structure) -> str:
    # Only the coordinates: the caller's header records may be arbitrary text.
    options = gemmi.PdbWriteOptions(minimal=True)
    return structure.make_pdb_string(options)


def complex_pdb(*, protein: gemmi.Structure, ligand: Chem.Mol, conformer_id: int = -1) -> str:
    """The protein with the ligand pose as a HETATM residue `LIG` on a chain of its own."""
    structure = protein.clone()
    model = structure[0]
    used = {chain.name for chain in model}
    chain_name = next(name for name in "LXYZ0123456789" if name not in used)
    chain = gemmi.Chain(chain_name)
    residue = gemmi.Residue()
    residue.name = LIGAND_RESIDUE
    residue.seqid = gemmi.SeqId(1, " ")
    residue.het_flag = "H"
    conformer = ligand.GetConformer(conformer_id)
    counts: dict[str, int] = {}
    for atom in ligand.GetAtoms():
        element = atom.GetSymbol()
        counts[element] = counts.get(element, 0) + 1
        site = gemmi.Atom()
        site.name = f"{element}{counts[element]}"[:4]
        site.element = gemmi.Element(element)
        position = conformer.GetAtomPosition(atom.GetIdx())
        site.pos = gemmi.Position(position.x, position.y, position.z)
        site.occ = 1.0
        residue.add_atom(site)
    chain.add_residue(residue)
    model.add_chain(chain)
    structure.setup_entities()
    return protein_pdb_text(structure)


def file_stem(name: str, default: str = "docking") -> str:
    # Job names are user text; keep file names safe to join onto workdir and to serve.
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:64]
    return stem or default


def pose_outputs(*, complex_name: str, complex_path: Path, poses_path: Path) -> list[OutputFile]:
    """The files every docking result starts with: the complex (the primary file), then all
    poses as one SDF named `POSES_FILE`."""
    return [
        OutputFile(
            name=complex_name, path=complex_path, content_type="chemical/x-pdb", role="structure"
        ),
        OutputFile(
            name=POSES_FILE,
            path=poses_path,
            content_type="chemical/x-mdl-sdfile",
            role="structure",
        ),
    ]
