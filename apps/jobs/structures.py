"""Structure import: read an uploaded or RCSB-fetched PDB/mmCIF file into its chains and
sequences, ready to send to /v1/predict. gemmi parses; nothing is stored."""

import re
import time
from dataclasses import dataclass
from typing import Any

import gemmi
import requests
from django.conf import settings

from apps.common.exceptions import BadGateway, GatewayTimeout, InvalidInput, NotFound

STRUCTURE_FORMATS = {".pdb": "pdb", ".cif": "mmcif", ".mmcif": "mmcif"}
PDB_ID = re.compile(r"^[0-9A-Za-z]{4}$")
# The largest RCSB entries (ribosomes, viral capsids) are tens of megabytes as mmCIF.
MAX_FETCH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ParsedStructure:
    format: str
    chains: list[dict[str, Any]]
    models: int

    def as_dict(self) -> dict[str, Any]:
        proteins = [chain for chain in self.chains if chain["protein"]]
        return {
            "format": self.format,
            "chains": [
                {"id": chain["id"], "sequence": chain["sequence"], "residues": chain["residues"]}
                for chain in self.chains
            ],
            "models": self.models,
            "predict_input": (
                {"model": "esmfold", "sequence": proteins[0]["sequence"]} if proteins else None
            ),
        }


def _one_letter(name: str) -> str:
    info = gemmi.find_tabulated_residue(name)
    if info is None or not info.one_letter_code.strip():
        return "X"
    return info.one_letter_code.upper()


def structure_format(*, filename: str) -> str:
    for extension, structure_format in STRUCTURE_FORMATS.items():
        if filename.lower().endswith(extension):
            return structure_format
    raise InvalidInput(f"{filename!r} is not a structure file; upload a .pdb, .cif or .mmcif file")


def structure_parse(*, text: str, structure_format: str) -> ParsedStructure:
    """Chains of the first model with their polymer sequences; a file gemmi cannot read, or
    one without any polymer chain, is bad input."""
    try:
        if structure_format == "pdb":
            structure = gemmi.read_pdb_string(text)
        else:
            structure = gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
        structure.setup_entities()
    except (RuntimeError, ValueError, IndexError) as error:
        raise InvalidInput(f"The file could not be read as {structure_format}: {error}") from None
    if len(structure) == 0:
        raise InvalidInput("The file holds no models")
    chains = []
    for chain in structure[0]:
        polymer = chain.get_polymer()
        if len(polymer) == 0:
            continue
        polymer_type = polymer.check_polymer_type()
        chains.append(
            {
                "id": chain.name,
                "sequence": "".join(_one_letter(residue.name) for residue in polymer),
                "residues": len(polymer),
                "protein": polymer_type in (gemmi.PolymerType.PeptideL, gemmi.PolymerType.PeptideD),
            }
        )
    if not chains:
        raise InvalidInput("The file holds no protein or nucleic acid chains")
    return ParsedStructure(format=structure_format, chains=chains, models=len(structure))


def _decode(content: bytes) -> str:
    if b"\x00" in content:
        raise InvalidInput("The file is not text")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return content.decode("latin-1")


def structure_upload_parse(*, filename: str, content: bytes) -> ParsedStructure:
    structure_format_ = structure_format(filename=filename)
    return structure_parse(text=_decode(content), structure_format=structure_format_)


def structure_fetch(*, pdb_id: str) -> ParsedStructure:
    """One RCSB entry as mmCIF; RCSB's failures map to 404 (no such entry), 504 and 502."""
    if not PDB_ID.match(pdb_id):
        raise InvalidInput(f"{pdb_id!r} is not a PDB id; a PDB id is 4 letters and digits")
    entry = pdb_id.upper()
    url = f"{settings.PHONOS_RCSB_URL}/download/{entry}.cif"
    deadline = time.monotonic() + settings.PHONOS_RCSB_TIMEOUT_SECONDS
    timeout = (
        settings.PHONOS_RCSB_CONNECT_TIMEOUT_SECONDS,
        settings.PHONOS_RCSB_READ_TIMEOUT_SECONDS,
    )
    try:
        with requests.get(url, timeout=timeout, stream=True) as reply:
            if reply.status_code == 404:
                raise NotFound(f"PDB entry {entry} not found")
            if reply.status_code != 200:
                raise BadGateway(f"RCSB answered {reply.status_code} for entry {entry}")
            content = bytearray()
            for chunk in reply.iter_content(chunk_size=1 << 16):
                content.extend(chunk)
                # The read timeout bounds each read; a server trickling bytes meets this one.
                if time.monotonic() > deadline:
                    raise requests.Timeout
                if len(content) > MAX_FETCH_BYTES:
                    raise BadGateway(
                        f"PDB entry {entry} is over {MAX_FETCH_BYTES} bytes, too large to import"
                    )
    except requests.Timeout:
        raise GatewayTimeout(
            f"RCSB did not answer within {settings.PHONOS_RCSB_TIMEOUT_SECONDS} s"
        ) from None
    except requests.RequestException as error:
        raise BadGateway(f"RCSB could not be reached: {type(error).__name__}") from None
    return structure_parse(text=_decode(bytes(content)), structure_format="mmcif")
