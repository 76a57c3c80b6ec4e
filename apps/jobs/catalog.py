"""Checking a request against the model registry (apps.jobs.registry), which holds the rules.

Validation raises InvalidInput with a message that names the offending field. RDKit and gemmi
are imported only when a docking request needs them.
"""

import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from apps.common.exceptions import InvalidInput
from apps.jobs.registry import COMMON_PARAMS, FOLD_MODEL_TYPE, MODELS, ModelSpec
from apps.webhooks.services import RequestWebhook, request_webhook_clean

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWYX"
_NOT_AMINO = re.compile(f"[^{AMINO_ACIDS}]")
_WHITESPACE = re.compile(r"\s+")


def model_get(model_id: Any) -> ModelSpec:
    if not isinstance(model_id, str) or not model_id:
        raise InvalidInput("model: a model id string is required")
    spec = MODELS.get(model_id)
    if spec is None:
        raise InvalidInput(
            f"model: unknown model {model_id!r}; available models: {', '.join(MODELS)}"
        )
    return spec


def fasta_single_record(text: str, *, field_name: str = "sequence") -> str:
    """FASTA given for one chain: its one record's residues, header (and `;` comment lines)
    dropped; plain sequences pass unchanged. Several records are several jobs, which is what
    /v1/batch is for (AlphaFold2 reads them as the chains of one complex: clean_chains)."""
    if not text.lstrip().startswith(">"):
        return text
    lines = [line.strip() for line in text.strip().splitlines()]
    records = sum(1 for line in lines if line.startswith(">"))
    if records > 1:
        raise InvalidInput(
            f"{field_name} holds {records} FASTA records; a prediction folds one. Submit one "
            "job per record with POST /v1/batch"
        )
    return "".join(line for line in lines if line and not line.startswith((">", ";")))


def _residues(text: str, *, label: str) -> str:
    """One chain's residues, white space dropped and upper-cased; refused when empty or when a
    character is not an amino acid."""
    sequence = _WHITESPACE.sub("", text).upper()
    if not sequence:
        raise InvalidInput(f"{label} is empty")
    bad = _NOT_AMINO.search(sequence)
    if bad:
        raise InvalidInput(
            f"{label} has {bad.group()!r} at position {bad.start() + 1}; "
            f"allowed residues are {AMINO_ACIDS}"
        )
    return sequence


def clean_protein_sequence(raw: Any, *, spec: ModelSpec, field_name: str = "sequence") -> str:
    if not isinstance(raw, str):
        raise InvalidInput(f"{field_name} must be a string of amino acids")
    sequence = _residues(fasta_single_record(raw, field_name=field_name), label=field_name)
    if len(sequence) > spec.max_length:
        raise InvalidInput(
            f"{field_name} has {len(sequence)} residues; {spec.id} accepts at most "
            f"{spec.max_length}"
        )
    return sequence


def clean_chains(raw: Any, *, spec: ModelSpec) -> list[str]:
    """AlphaFold2's chains: `A:B` (ColabFold's notation) or FASTA with one record per chain."""
    if not isinstance(raw, str):
        raise InvalidInput("sequence must be a string of amino acids")
    text = raw.strip()
    if text.startswith(">"):
        chains = ["".join(record.splitlines()[1:]) for record in text.split(">")[1:]]
        labels = [f"sequence (FASTA record {number})" for number in range(1, len(chains) + 1)]
    else:
        chains = text.split(":")
        labels = (
            [f"sequence (chain {number})" for number in range(1, len(chains) + 1)]
            if len(chains) > 1
            else ["sequence"]
        )
    if len(chains) > spec.max_chains:
        raise InvalidInput(
            f"sequence has {len(chains)} chains; {spec.id} folds at most {spec.max_chains}"
        )
    cleaned = [_residues(chain, label=label) for chain, label in zip(chains, labels, strict=True)]
    total = sum(len(chain) for chain in cleaned)
    if total > spec.max_length:
        raise InvalidInput(
            f"sequence has {total} residues; {spec.id} accepts at most {spec.max_length} "
            "(all chains together)"
        )
    return cleaned


def _clean_alphafold2(
    raw_sequence: Any, raw_params: Any, params: dict[str, Any], spec: ModelSpec
) -> str:
    """The chains as `A:B`; resolves use_templates and model_preset from what was asked."""
    chains = clean_chains(raw_sequence, spec=spec)
    given = raw_params if isinstance(raw_params, dict) else {}
    if len(chains) > 1:
        if given.get("model_preset") is None:
            params["model_preset"] = "multimer"
        elif params["model_preset"] != "multimer":
            raise InvalidInput(
                f"sequence has {len(chains)} chains; params.model_preset "
                f"{params['model_preset']!r} folds one chain, use 'multimer'"
            )
        if params["msa_mode"] == "a3m":
            raise InvalidInput("params.msa_mode 'a3m' takes one chain")
    if params["msa_mode"] == "a3m" and not params.get("a3m"):
        raise InvalidInput("params.a3m is required when params.msa_mode is 'a3m'")
    server_mode = params["msa_mode"] == "mmseqs2_server"
    if server_mode and not settings.PHONOS_MSA_SERVER_URL:
        raise InvalidInput(
            "params.msa_mode 'mmseqs2_server' needs an MSA server and none is configured; "
            "use 'single_sequence' or 'a3m'"
        )
    if given.get("use_templates") is None:
        # The public default (true) applies where templates can be had: with the server.
        params["use_templates"] = server_mode
    elif params["use_templates"] and not server_mode:
        raise InvalidInput(
            "params.use_templates needs params.msa_mode 'mmseqs2_server': templates come "
            f"from the MMseqs2 server's template search, not from {params['msa_mode']!r}"
        )
    return ":".join(chains)


def clean_smiles(raw: Any, *, field_name: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(f"{field_name} must be a non-empty SMILES string")
    # Checked on the raw text, before RDKit: parsing costs about 2 s per MB in the request thread.
    max_chars = settings.PHONOS_MAX_LIGAND_SMILES_CHARS
    if len(raw) > max_chars:
        raise InvalidInput(
            f"{field_name} has {len(raw)} characters; a ligand SMILES may have at most {max_chars}"
        )
    smiles = raw.strip()
    from rdkit import Chem, rdBase

    rdBase.DisableLog("rdApp.*")
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None or molecule.GetNumAtoms() == 0:
        raise InvalidInput(f"{field_name}: {smiles!r} is not a valid SMILES string")
    max_heavy = settings.PHONOS_MAX_LIGAND_HEAVY_ATOMS
    if molecule.GetNumHeavyAtoms() > max_heavy:
        raise InvalidInput(
            f"{field_name} has {molecule.GetNumHeavyAtoms()} heavy atoms; a ligand may have at "
            f"most {max_heavy}"
        )
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
        if bool(gemmi.find_tabulated_residue(residue.name))
        and gemmi.find_tabulated_residue(residue.name).is_amino_acid()
    )
    if residues == 0:
        raise InvalidInput(f"{field_name} contains no protein residues")
    if limit_length and residues > spec.max_length:
        raise InvalidInput(
            f"{field_name} has {residues} residues; {spec.id} accepts at most {spec.max_length}"
        )
    return raw


def _ligand_clean(text: str, *, field_name: str, file_format: str, require_3d: bool = False) -> Any:
    """The molecule of a ligand file, read as the worker will read it (apps.jobs.chemistry)."""
    from apps.jobs.chemistry import LigandFormatError, ligand_from_text

    try:
        molecule = ligand_from_text(text, file_format=file_format, require_3d=require_3d)
    except LigandFormatError as error:
        raise InvalidInput(f"{field_name}: {error}") from None
    max_heavy = settings.PHONOS_MAX_LIGAND_HEAVY_ATOMS
    if molecule.GetNumHeavyAtoms() > max_heavy:
        raise InvalidInput(
            f"{field_name} has {molecule.GetNumHeavyAtoms()} heavy atoms; a ligand may have at "
            f"most {max_heavy}"
        )
    return molecule


def _docking_clean(raw_sequence: Any, *, params: dict[str, Any], spec: ModelSpec) -> str:
    """Check a docking request's ligand, receptor and pocket (the rules across params; each
    param's own are the registry's); returns the job's `sequence`: the ligand as SMILES."""
    from rdkit import Chem

    from apps.jobs.chemistry import LIGAND_FILE_FORMATS

    if raw_sequence == "":
        raw_sequence = None
    formats = [name for name in ("ligand_smiles", *LIGAND_FILE_FORMATS) if name in params]
    if len(formats) > 1:
        raise InvalidInput(f"give one ligand: params.{formats[0]} or params.{formats[1]}, not both")
    if formats and formats[0] in LIGAND_FILE_FORMATS:
        if raw_sequence is not None:
            raise InvalidInput(f"give the ligand once: sequence or params.{formats[0]}, not both")
        molecule = _ligand_clean(
            params[formats[0]],
            field_name=f"params.{formats[0]}",
            file_format=LIGAND_FILE_FORMATS[formats[0]],
        )
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
            params["protein_pdb"], spec=spec, limit_length=not spec.crops_receptor
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
            params["pocket_ligand_sdf"],
            field_name="params.pocket_ligand_sdf",
            file_format="sdf",
            require_3d=True,
        )
    if "pocket_residues" in params and "protein_pdb" in params:
        # A structure prediction's residues are checked by the worker, which reads it.
        _pocket_residues_present(params["pocket_residues"], protein_pdb=params["protein_pdb"])
    return sequence


def _pocket_residues_present(residues: list[str], *, protein_pdb: str) -> None:
    import gemmi

    from apps.jobs.chemistry import residues_missing

    missing = residues_missing(gemmi.read_pdb_string(protein_pdb), residues)
    if missing:
        raise InvalidInput(
            f"params.pocket_residues: {', '.join(missing[:5])} not in params.protein_pdb"
        )


def clean_params(raw: Any, *, spec: ModelSpec) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput("params must be a JSON object")
    known = {param.name: param for param in spec.params}
    unknown = sorted(set(raw) - set(known) - {param.name for param in COMMON_PARAMS})
    if unknown:
        raise InvalidInput(
            f"params.{unknown[0]} is not a parameter of {spec.id}; "
            f"known parameters: {', '.join(known) or 'none'}"
        )
    # Every rule comes from the registry; the common params (cache) are read by
    # `common_params_clean`, apart from what the model computes with.
    cleaned: dict[str, Any] = {}
    for name, param in known.items():
        if name in raw and raw[name] is not None:
            cleaned[name] = param.check(raw[name])
        elif param.default is not None:
            cleaned[name] = param.default
    return cleaned


def common_params_clean(raw: Any) -> dict[str, Any]:
    """The params every model takes (registry.COMMON_PARAMS), checked, defaults filled in."""
    given = raw if isinstance(raw, dict) else {}
    return {
        param.name: param.check(given[param.name])
        if given.get(param.name) is not None
        else param.default
        for param in COMMON_PARAMS
    }


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
    # params.cache: may this submission reuse an identical result or ride on an identical run?
    use_cache: bool = True
    # The submission's own webhook (`webhook_url`, `webhook_events`), if it gave one.
    webhook: RequestWebhook | None = None

    @property
    def cost(self) -> int:
        return self.spec.cost(sequence=self.sequence, params=self.params)


def submission_clean(data: Any) -> CleanedSubmission:
    """Check one predict request body; the same checks serve predict, batch and validate."""
    if not isinstance(data, dict):
        raise InvalidInput("The request body must be a JSON object")
    allowed = {"model", "sequence", "name", "params", "webhook_url", "webhook_events"}
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
    common = common_params_clean(data.get("params"))

    if spec.type == "docking":
        sequence = _docking_clean(data.get("sequence"), params=params, spec=spec)
    else:
        if "sequence" not in data:
            raise InvalidInput("sequence is required")
        if spec.id == "alphafold2":
            sequence = _clean_alphafold2(data["sequence"], data.get("params"), params, spec)
        else:
            sequence = clean_protein_sequence(data["sequence"], spec=spec)
    webhook = request_webhook_clean(url=data.get("webhook_url"), events=data.get("webhook_events"))
    return CleanedSubmission(
        spec=spec,
        sequence=sequence,
        name=name.strip(),
        params=params,
        use_cache=common["cache"],
        webhook=webhook,
    )


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
    # A pipeline's webhook_url hears both of its jobs (a part's own webhook_url wins for it).
    pipeline_webhook = {key: data[key] for key in ("webhook_url", "webhook_events") if key in data}
    unknown = sorted(set(data) - {"name", "fold", "dock", *pipeline_webhook})
    if unknown:
        raise InvalidInput(f"{unknown[0]} is not a field of a pipeline request")
    name = data.get("name") or ""
    if not isinstance(name, str) or len(name) > 200:
        raise InvalidInput("name must be a string of at most 200 characters")
    fold_data = _pipeline_part(data.get("fold"), part="fold")
    dock_data = _pipeline_part(data.get("dock"), part="dock")
    fold_job_id = uuid.uuid4()
    try:
        fold = submission_clean({"name": name, **pipeline_webhook, **fold_data})
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
                **pipeline_webhook,
                **dock_data,
                "params": {**dock_params, "protein_job_id": str(fold_job_id)},
            }
        )
    except InvalidInput as error:
        raise InvalidInput(f"dock: {error.message}") from None
    if len(fold.sequence.replace(":", "")) > dock.spec.max_length:
        raise InvalidInput(
            f"fold: the sequence has {len(fold.sequence.replace(':', ''))} residues; {dock.spec.id} docks "
            f"against at most {dock.spec.max_length}"
        )
    return CleanedPipeline(name=name.strip(), fold_job_id=fold_job_id, fold=fold, dock=dock)
