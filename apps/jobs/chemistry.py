"""Reading docking inputs the same way at submission and on the worker: ligand files (SDF, MOL2)
and the residues that line a pocket.

The API checks a request with these functions (apps.jobs.catalog answers 400 on a
`LigandFormatError`) and the docking runners read the job with the same ones, so a ligand the
API accepted is the molecule the worker docks. Pure: RDKit and gemmi, no Django, so runners
import it as they import the registry (docs/architecture.md, "Import order"). The rules on the
params themselves (sizes, counts, formats) are the registry's.
"""

from __future__ import annotations

import gemmi
from rdkit import Chem, RDLogger

# The ligand params given as files, and each one's format.
LIGAND_FILE_FORMATS = {"ligand_sdf": "sdf", "ligand_mol2": "mol2"}


class LigandFormatError(ValueError):
    """A ligand file that cannot be read; the API answers 400 with it, a worker fails the job."""


def ligand_from_text(text: str, *, file_format: str, require_3d: bool = False) -> Chem.Mol:
    """One molecule from SDF (MOL block) or MOL2 text, sanitized; its stereo from its 3D
    coordinates when it has them."""
    if not isinstance(text, str) or not text.strip():
        raise LigandFormatError(f"the {file_format.upper()} text is empty")
    RDLogger.DisableLog("rdApp.*")
    if file_format == "mol2":
        molecule = Chem.MolFromMol2Block(text, removeHs=False)
    else:
        # The first record of an SDF; a second one is ignored, as docking takes one ligand.
        molecule = Chem.MolFromMolBlock(text.split("$$$$")[0], removeHs=False)
    if molecule is None or molecule.GetNumAtoms() == 0:
        raise LigandFormatError(f"could not be read as {file_format.upper()} (RDKit rejected it)")
    if any(atom.GetNumRadicalElectrons() for atom in molecule.GetAtoms()):
        raise LigandFormatError("has radicals: are its hydrogens missing? (MOL2 needs them)")
    if len(Chem.GetMolFrags(molecule)) > 1:
        raise LigandFormatError("holds several disconnected molecules; give one ligand")
    three_d = molecule.GetNumConformers() > 0 and molecule.GetConformer().Is3D()
    if require_3d and not three_d:
        raise LigandFormatError("has no 3D coordinates")
    if three_d:
        Chem.AssignStereochemistryFrom3D(molecule)
    return molecule


def residue_label(chain: gemmi.Chain, residue: gemmi.Residue) -> str:
    """A residue as `params.pocket_residues` names it: CHAIN:NUMBER plus any insertion code."""
    return f"{chain.name}:{residue.seqid.num}{residue.seqid.icode.strip()}"


def residues_missing(structure: gemmi.Structure, residues: list[str]) -> list[str]:
    """The named residues that the structure's first model lacks, in the order given."""
    present = {residue_label(chain, residue) for chain in structure[0] for residue in chain}
    return [residue for residue in residues if residue not in present]
