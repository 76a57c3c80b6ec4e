"""The model catalog: what each model costs, which params it takes, and how inputs are checked.

Validation raises InvalidInput with a message that names the offending field. RDKit and gemmi
are imported only when a docking request needs them.
"""

import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from apps.common.exceptions import InvalidInput

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWYX"
_NOT_AMINO = re.compile(f"[^{AMINO_ACIDS}]")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Param:
    name: str
    kind: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    description: str = ""

    def check(self, value: Any) -> Any:
        label = f"params.{self.name}"
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{label} must be an integer")
            if self.minimum is not None and value < self.minimum:
                raise InvalidInput(f"{label} must be between {self.minimum} and {self.maximum}")
            if self.maximum is not None and value > self.maximum:
                raise InvalidInput(f"{label} must be between {self.minimum} and {self.maximum}")
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"{label} must be a number")
            in_range = (self.minimum is None or value >= self.minimum) and (
                self.maximum is None or value <= self.maximum
            )
            if not math.isfinite(value) or not in_range:
                raise InvalidInput(f"{label} must be between {self.minimum} and {self.maximum}")
            value = float(value)
        elif self.kind is bool:
            if not isinstance(value, bool):
                raise InvalidInput(f"{label} must be true or false")
        elif self.kind is str:
            if not isinstance(value, str):
                raise InvalidInput(f"{label} must be a string")
            if self.choices and value not in self.choices:
                raise InvalidInput(f"{label} must be one of: {', '.join(self.choices)}")
            if self.maximum is not None and len(value) > self.maximum:
                raise InvalidInput(f"{label} must be at most {int(self.maximum)} characters")
        elif self.kind is list:
            # A list of strings; a string of items separated by commas or spaces also does
            # (what a form field sends).
            if isinstance(value, str):
                value = [item for item in re.split(r"[\s,]+", value) if item]
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise InvalidInput(f"{label} must be a list of strings")
            if not value or (self.maximum is not None and len(value) > self.maximum):
                raise InvalidInput(f"{label} must hold 1 to {int(self.maximum or 1)} items")
        return value


@dataclass(frozen=True)
class ModelSpec:
    id: str
    name: str
    description: str
    type: str
    cost_credits: int
    queue: str
    params: tuple[Param, ...] = field(default_factory=tuple)

    @property
    def max_length(self) -> int:
        return settings.PHONOS_MAX_LENGTH[self.id]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "type": self.type,
            "cost_credits": self.cost_credits,
        }


PROTEIN_JOB_ID_HELP = "A completed structure prediction job of this account, instead of protein_pdb"
# Models whose completed jobs a docking job may take its protein from (params.protein_job_id).
FOLD_MODEL_TYPE = "structure_prediction"

# Ligand files as text: a drug-like molecule is a few kB; this bounds what a request can hold.
MAX_LIGAND_FILE_CHARS = 100_000
MAX_LIGAND_HEAVY_ATOMS = 150
MAX_POCKET_RESIDUES = 100
LIGAND_FORMAT_PARAMS = ("ligand_smiles", "ligand_sdf", "ligand_mol2")
# The ligand as SMILES, SDF or MOL2 text: what both docking models (and NVIDIA's DiffDock
# service) take.
LIGAND_PARAMS = (
    Param("ligand_smiles", str, None, description="The ligand as SMILES"),
    Param(
        "ligand_sdf",
        str,
        None,
        maximum=MAX_LIGAND_FILE_CHARS,
        description="The ligand as SDF (MOL) text, instead of SMILES",
    ),
    Param(
        "ligand_mol2",
        str,
        None,
        maximum=MAX_LIGAND_FILE_CHARS,
        description="The ligand as Tripos MOL2 text, instead of SMILES",
    ),
)
VINA_SCORING = ("vina", "vinardo")
VINA_RANKING = ("consensus", "score")
MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="esmfold",
            name="ESMFold",
            description="Fast protein structure prediction from Meta AI",
            type="structure_prediction",
            cost_credits=10,
            queue="esmfold",
            params=(
                Param("num_recycles", int, 4, 1, 24, description="Recycling iterations"),
                Param("chunk_size", int, 128, 1, 4096, description="Trunk chunk size"),
            ),
        ),
        ModelSpec(
            id="alphafold2",
            name="AlphaFold2",
            description="High-accuracy protein structure prediction from DeepMind",
            type="structure_prediction",
            cost_credits=50,
            queue="alphafold2",
            params=(
                Param("max_msa_seqs", int, 512, 1, 8192, description="MSA depth"),
                Param("use_templates", bool, True),
                Param(
                    "model_preset",
                    str,
                    "monomer",
                    choices=("monomer", "monomer_casp14", "monomer_ptm"),
                ),
                Param("num_recycles", int, 3, 1, 24),
                Param("num_models", int, 5, 1, 5),
                Param(
                    "msa_mode",
                    str,
                    "mmseqs2_server",
                    choices=("mmseqs2_server", "single_sequence", "a3m"),
                ),
                Param("a3m", str, None),
            ),
        ),
        ModelSpec(
            id="diffdock",
            name="DiffDock",
            description="Molecular docking for protein-ligand interactions",
            type="docking",
            cost_credits=30,
            queue="diffdock",
            params=(
                Param("protein_pdb", str, None),
                Param("protein_job_id", str, None, description=PROTEIN_JOB_ID_HELP),
                *LIGAND_PARAMS,
                Param("inference_steps", int, 20, 10, 40),
                Param("samples_per_complex", int, 10, 1, 40),
            ),
        ),
        ModelSpec(
            id="vina",
            name="AutoDock Vina",
            description="Physics-based protein-ligand docking in a search box (CPU)",
            type="docking",
            cost_credits=5,
            queue="vina",
            params=(
                Param("protein_pdb", str, None),
                Param("protein_job_id", str, None, description=PROTEIN_JOB_ID_HELP),
                *LIGAND_PARAMS,
                Param("ph", float, 7.4, 0, 14, description="Ligand protonation pH"),
                Param(
                    "keep_hetero",
                    bool,
                    False,
                    description="Keep metal ions and cofactors (known residue names) in the receptor",
                ),
                Param(
                    "pocket_ligand_sdf",
                    str,
                    None,
                    maximum=MAX_LIGAND_FILE_CHARS,
                    description="A reference ligand (SDF): its bounding box plus a margin is the box",
                ),
                Param(
                    "pocket_residues",
                    list,
                    None,
                    maximum=MAX_POCKET_RESIDUES,
                    description='Residues lining the pocket, e.g. ["A:45", "A:112"]',
                ),
                Param(
                    "pocket_margin",
                    float,
                    5.0,
                    0,
                    20,
                    description="Å added on each side of a pocket from a ligand or residues",
                ),
                *(
                    Param(f"center_{axis}", float, None, -9999, 9999, description="Box centre, Å")
                    for axis in "xyz"
                ),
                *(
                    Param(f"size_{axis}", float, None, 1, 60, description="Box side, Å")
                    for axis in "xyz"
                ),
                Param("scoring", str, "vina", choices=VINA_SCORING, description="Scoring function"),
                Param(
                    "ranking",
                    str,
                    "consensus",
                    choices=VINA_RANKING,
                    description="Pose order: mean rank under vina and vinardo, or the score alone",
                ),
                Param("exhaustiveness", int, 8, 1, 32, description="Search effort"),
                Param("num_poses", int, 9, 1, 20, description="Ranked poses returned"),
                Param("seed", int, None, 0, 2**31 - 1, description="Random seed"),
            ),
        ),
    )
}


def model_get(model_id: Any) -> ModelSpec:
    if not isinstance(model_id, str) or not model_id:
        raise InvalidInput("model: a model id string is required")
    spec = MODELS.get(model_id)
    if spec is None:
        raise InvalidInput(
            f"model: unknown model {model_id!r}; available models: {', '.join(MODELS)}"
        )
    return spec


def clean_protein_sequence(raw: Any, *, spec: ModelSpec, field_name: str = "sequence") -> str:
    if not isinstance(raw, str):
        raise InvalidInput(f"{field_name} must be a string of amino acids")
    sequence = _WHITESPACE.sub("", raw).upper()
    if not sequence:
        raise InvalidInput(f"{field_name} is empty")
    bad = _NOT_AMINO.search(sequence)
    if bad:
        raise InvalidInput(
            f"{field_name} has {bad.group()!r} at position {bad.start() + 1}; "
            f"allowed residues are {AMINO_ACIDS}"
        )
    if len(sequence) > spec.max_length:
        raise InvalidInput(
            f"{field_name} has {len(sequence)} residues; {spec.id} accepts at most "
            f"{spec.max_length}"
        )
    return sequence


def clean_smiles(raw: Any, *, field_name: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(f"{field_name} must be a non-empty SMILES string")
    smiles = raw.strip()
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None or molecule.GetNumAtoms() == 0:
        raise InvalidInput(f"{field_name}: {smiles!r} is not a valid SMILES string")
    return smiles


def clean_protein_pdb(
    raw: Any, *, spec: ModelSpec, field_name: str = "params.protein_pdb", limit_length: bool = True
) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(f"{field_name} must be the text of a PDB file")
    if "\n" not in raw.strip() and not raw.lstrip().startswith(("ATOM", "HETATM")):
        raise InvalidInput(
            f"{field_name} must be the content of a PDB file; file paths are not accepted"
        )
    import gemmi

    try:
        structure = gemmi.read_pdb_string(raw)
    except (RuntimeError, ValueError) as error:
        raise InvalidInput(f"{field_name} could not be parsed as PDB: {error}") from None
    if len(structure) == 0:
        raise InvalidInput(f"{field_name} contains no atoms")
    model = structure[0]
    residues = sum(
        1
        for chain in model
        for residue in chain
        if gemmi.find_tabulated_residue(residue.name)
        and gemmi.find_tabulated_residue(residue.name).is_amino_acid()
    )
    if residues == 0:
        raise InvalidInput(f"{field_name} contains no protein residues")
    if limit_length and residues > spec.max_length:
        raise InvalidInput(
            f"{field_name} has {residues} residues; {spec.id} accepts at most {spec.max_length}"
        )
    return raw


# Models that crop the receptor to the search box: their length limit applies to the cropped
# receptor, which only the worker knows.
CROPPING_MODELS = {"vina"}
_POCKET_RESIDUE = re.compile(r"^[A-Za-z0-9]{1,4}:-?\d{1,5}[A-Za-z]?$")


def _ligand_clean(text: str, *, field_name: str, require_3d: bool = False) -> Any:
    from workers.runners.docking import LigandFormatError, ligand_from_text

    file_format = "mol2" if field_name.endswith("mol2") else "sdf"
    try:
        molecule = ligand_from_text(text, file_format=file_format, require_3d=require_3d)
    except LigandFormatError as error:
        raise InvalidInput(f"{field_name}: {error}") from None
    if molecule.GetNumHeavyAtoms() > MAX_LIGAND_HEAVY_ATOMS:
        raise InvalidInput(
            f"{field_name} has {molecule.GetNumHeavyAtoms()} heavy atoms; at most "
            f"{MAX_LIGAND_HEAVY_ATOMS}"
        )
    return molecule


def _docking_clean(raw_sequence: Any, *, params: dict[str, Any], spec: ModelSpec) -> str:
    """Check a docking request's ligand, receptor and pocket; returns the job's `sequence`: the
    ligand as SMILES."""
    from rdkit import Chem

    if raw_sequence == "":
        raw_sequence = None
    formats = [name for name in LIGAND_FORMAT_PARAMS if name in params]
    if len(formats) > 1:
        raise InvalidInput(f"give one ligand: params.{formats[0]} or params.{formats[1]}, not both")
    if formats and formats[0] != "ligand_smiles":
        if raw_sequence is not None:
            raise InvalidInput(f"give the ligand once: sequence or params.{formats[0]}, not both")
        molecule = _ligand_clean(params[formats[0]], field_name=f"params.{formats[0]}")
        sequence = Chem.MolToSmiles(Chem.RemoveHs(molecule))
    else:
        ligand = params.get("ligand_smiles")
        if ligand is None and raw_sequence is None:
            raise InvalidInput(
                "params.ligand_smiles (or sequence holding the ligand's SMILES, or "
                "params.ligand_sdf, or params.ligand_mol2) is required"
            )
        sequence = clean_smiles(
            ligand if ligand is not None else raw_sequence,
            field_name="params.ligand_smiles" if ligand is not None else "sequence",
        )
        if ligand is not None and raw_sequence is not None:
            if not isinstance(raw_sequence, str) or raw_sequence.strip() != sequence:
                raise InvalidInput("sequence and params.ligand_smiles name different ligands")
        params["ligand_smiles"] = sequence
    if "protein_job_id" in params:
        if "protein_pdb" in params:
            raise InvalidInput("give params.protein_pdb or params.protein_job_id, not both")
        params["protein_job_id"] = _clean_job_id(params["protein_job_id"])
    elif "protein_pdb" in params:
        params["protein_pdb"] = clean_protein_pdb(
            params["protein_pdb"], spec=spec, limit_length=spec.id not in CROPPING_MODELS
        )
    else:
        raise InvalidInput(
            f"params.protein_pdb (or params.protein_job_id) is required for {spec.id}"
        )
    for box in ("center", "size"):
        given = [axis for axis in "xyz" if f"{box}_{axis}" in params]
        if given and len(given) < 3:
            raise InvalidInput(f"params.{box}_x, {box}_y and {box}_z go together; give all three")
    pockets = [
        name
        for name, given in (
            ("center_x", "center_x" in params or "size_x" in params),
            ("pocket_ligand_sdf", "pocket_ligand_sdf" in params),
            ("pocket_residues", "pocket_residues" in params),
        )
        if given
    ]
    if len(pockets) > 1:
        raise InvalidInput(f"give one pocket: params.{pockets[0]} or params.{pockets[1]}, not both")
    if "pocket_ligand_sdf" in params:
        _ligand_clean(
            params["pocket_ligand_sdf"], field_name="params.pocket_ligand_sdf", require_3d=True
        )
    if "pocket_residues" in params:
        params["pocket_residues"] = _pocket_residues_clean(
            params["pocket_residues"], protein_pdb=params.get("protein_pdb")
        )
    return sequence


def _pocket_residues_clean(residues: list[str], *, protein_pdb: str | None) -> list[str]:
    bad = [residue for residue in residues if not _POCKET_RESIDUE.match(residue)]
    if bad:
        raise InvalidInput(
            f"params.pocket_residues: {bad[0]!r} is not a residue; write CHAIN:NUMBER, e.g. 'A:45'"
        )
    if protein_pdb is not None:
        # A structure prediction's residues are checked by the worker, which reads it.
        import gemmi

        structure = gemmi.read_pdb_string(protein_pdb)
        present = {
            f"{chain.name}:{residue.seqid.num}{residue.seqid.icode.strip()}"
            for chain in structure[0]
            for residue in chain
        }
        missing = [residue for residue in residues if residue not in present]
        if missing:
            raise InvalidInput(
                f"params.pocket_residues: {', '.join(missing[:5])} not in params.protein_pdb"
            )
    return residues


def clean_params(raw: Any, *, spec: ModelSpec) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput("params must be a JSON object")
    known = {param.name: param for param in spec.params}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise InvalidInput(
            f"params.{unknown[0]} is not a parameter of {spec.id}; "
            f"known parameters: {', '.join(known) or 'none'}"
        )
    cleaned: dict[str, Any] = {}
    for name, param in known.items():
        if name in raw and raw[name] is not None:
            cleaned[name] = param.check(raw[name])
        elif param.default is not None:
            cleaned[name] = param.default
    return cleaned


def _clean_job_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidInput("params.protein_job_id must be a job id") from None


@dataclass(frozen=True)
class CleanedSubmission:
    spec: ModelSpec
    sequence: str
    name: str
    params: dict[str, Any]

    @property
    def cost(self) -> int:
        return self.spec.cost_credits


def submission_clean(data: Any) -> CleanedSubmission:
    """Check one predict request body; the same checks serve predict, batch and validate."""
    if not isinstance(data, dict):
        raise InvalidInput("The request body must be a JSON object")
    allowed = {"model", "sequence", "name", "params"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidInput(f"{unknown[0]} is not a field of a prediction request")
    spec = model_get(data.get("model"))
    name = data.get("name") or ""
    if not isinstance(name, str):
        raise InvalidInput("name must be a string")
    if len(name) > 200:
        raise InvalidInput("name must be at most 200 characters")
    params = clean_params(data.get("params"), spec=spec)

    if spec.type == "docking":
        sequence = _docking_clean(data.get("sequence"), params=params, spec=spec)
    else:
        if "sequence" not in data:
            raise InvalidInput("sequence is required")
        sequence = clean_protein_sequence(data["sequence"], spec=spec)
        if spec.id == "alphafold2" and params.get("msa_mode") == "a3m" and not params.get("a3m"):
            raise InvalidInput("params.a3m is required when params.msa_mode is 'a3m'")
    return CleanedSubmission(spec=spec, sequence=sequence, name=name.strip(), params=params)


@dataclass(frozen=True)
class CleanedPipeline:
    name: str
    fold_job_id: uuid.UUID
    fold: CleanedSubmission
    dock: CleanedSubmission


def _pipeline_part(data: Any, *, part: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput(f"{part} must be an object holding a prediction request")
    return data


def pipeline_clean(data: Any) -> CleanedPipeline:
    """Check a fold→dock pipeline with the same checks as predict. The dock's receptor is the
    fold's structure: its params.protein_job_id names the fold job, whose id is chosen here."""
    if not isinstance(data, dict):
        raise InvalidInput("The request body must be a JSON object")
    unknown = sorted(set(data) - {"name", "fold", "dock"})
    if unknown:
        raise InvalidInput(f"{unknown[0]} is not a field of a pipeline request")
    name = data.get("name") or ""
    if not isinstance(name, str) or len(name) > 200:
        raise InvalidInput("name must be a string of at most 200 characters")
    fold_data = _pipeline_part(data.get("fold"), part="fold")
    dock_data = _pipeline_part(data.get("dock"), part="dock")
    fold_job_id = uuid.uuid4()
    try:
        fold = submission_clean({"name": name, **fold_data})
    except InvalidInput as error:
        raise InvalidInput(f"fold: {error.message}") from None
    if fold.spec.type != FOLD_MODEL_TYPE:
        raise InvalidInput(f"fold: {fold.spec.id} is not a structure prediction model")
    try:
        dock_spec = model_get(dock_data.get("model"))
    except InvalidInput as error:
        raise InvalidInput(f"dock: {error.message}") from None
    if dock_spec.type != "docking":
        raise InvalidInput(f"dock: {dock_spec.id} is not a docking model")
    dock_params = dock_data.get("params")
    if dock_params is None:
        dock_params = {}
    if not isinstance(dock_params, dict):
        raise InvalidInput("dock: params must be an object")
    for receptor_field in ("protein_pdb", "protein_job_id"):
        if receptor_field in dock_params:
            raise InvalidInput(
                f"dock: params.{receptor_field} is not allowed; the receptor is the fold's structure"
            )
    try:
        dock = submission_clean(
            {
                "name": name,
                **dock_data,
                "params": {**dock_params, "protein_job_id": str(fold_job_id)},
            }
        )
    except InvalidInput as error:
        raise InvalidInput(f"dock: {error.message}") from None
    if len(fold.sequence) > dock.spec.max_length:
        raise InvalidInput(
            f"fold: the sequence has {len(fold.sequence)} residues; {dock.spec.id} docks "
            f"against at most {dock.spec.max_length}"
        )
    return CleanedPipeline(name=name.strip(), fold_job_id=fold_job_id, fold=fold, dock=dock)
