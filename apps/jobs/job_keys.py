"""Job keys: what a job computes, as one hash, so identical work is recognised and done once.

A key covers the model, the weights identity its registry entry declares (a change of weights
changes every key), the canonical input and the canonical params (defaults filled in, keys
sorted). Canonical input: a protein sequence as checked (upper case, no whitespace); a ligand
as RDKit's canonical SMILES; a receptor as the digest of its atom records' names and
coordinates (remarks, serial numbers, B-factors and occupancies do not count), or, given by
`protein_job_id`, that job's own key.

Also here, pure and shared by the API and the AlphaFold2 worker: where the MSA cache keeps a
sequence's alignment (`msa_cache_path`), so the API can say whether an MSA is cached without
importing worker code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Bumped when the canonical form changes, so that old keys never match new ones.
KEY_VERSION = 1
# Params that name the input rather than steer the computation; the input part covers them.
_INPUT_PARAMS = ("protein_pdb", "protein_job_id", "ligand_smiles")


def receptor_digest(pdb_text: str) -> str:
    """The receptor's atoms (name, residue, chain, number, coordinates), hashed."""
    digest = hashlib.sha256()
    for line in pdb_text.splitlines():
        if line.startswith(("ATOM", "HETATM")):
            # Columns 13-54: atom name, altLoc, residue name, chain, number, insertion, x, y, z.
            digest.update(line[12:54].encode())
            digest.update(b"\n")
        elif line.startswith("ENDMDL"):
            break  # the first model only, as the runners read it
    return digest.hexdigest()


def canonical_smiles(smiles: str) -> str:
    """RDKit's canonical SMILES, so `OCC` and `CCO` are one ligand."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    molecule = Chem.MolFromSmiles(smiles)
    return Chem.MolToSmiles(molecule) if molecule is not None else smiles


def job_key(
    *,
    model_id: str,
    weights: str,
    input_kind: str,
    sequence: str,
    params: dict[str, Any],
    protein_job_key: str | None = None,
) -> str:
    canonical_input: dict[str, Any] = {}
    if input_kind == "ligand":
        canonical_input["ligand"] = canonical_smiles(sequence)
        if protein_job_key is not None:
            canonical_input["receptor_job"] = protein_job_key
        elif params.get("protein_pdb"):
            canonical_input["receptor"] = receptor_digest(params["protein_pdb"])
    else:
        canonical_input["sequence"] = sequence
    document = {
        "v": KEY_VERSION,
        "model": model_id,
        "weights": weights,
        "input": canonical_input,
        "params": {name: value for name, value in params.items() if name not in _INPUT_PARAMS},
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(encoded.encode()).hexdigest()


# The MMseqs2 server mode the AlphaFold2 worker searches with (workers.runners.msa).
MSA_MODE = "env"


def msa_cache_path(cache_dir: Path, sequence: str, mode: str = MSA_MODE) -> Path:
    """Where the MSA cache keeps the alignment of one chain searched in `mode`."""
    digest = hashlib.sha256(f"{mode}:{sequence}".encode()).hexdigest()
    return cache_dir / digest[:2] / f"{digest}.a3m"
