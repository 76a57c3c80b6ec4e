"""The model registry: every model is declared here once, and everything else reads it.

One `ModelSpec` per model says what it is (id, name, description, type, what its input is),
what it costs and how long its input may be, which queue runs it and for how long, its
parameters (type, default, range, choices, description: the only copy of those rules), the
runner class that runs it on a worker, how that runner is configured, which setting names its
weights, and what its outputs look like. The API's validation (apps.jobs.catalog), the OpenAPI
schema and `/v1/models`, the dashboard's form and labels, `phonos/settings/` (each model's
length and time-limit settings) and the worker's dispatch (workers.execution) all read it.

This module is pure Python: no torch, JAX or RDKit, and no Django settings at import time
(`phonos/settings/` imports it to name each model's settings). Runners are named by dotted
path and imported only on the worker that runs them. Adding a model is one entry in `MODELS`
plus one runner module (docs/architecture.md, "Adding a model").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from apps.common.exceptions import InvalidInput

InputKind = Literal["protein", "ligand"]
ModelType = Literal["structure_prediction", "docking"]

# Chains of a complex in one `sequence`, as ColabFold writes them.
CHAIN_SEPARATOR = ":"
_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", list: "array"}


@dataclass(frozen=True)
class Param:
    """One model parameter, as Cog's `Input(...)`: its type, default, bounds and meaning.

    `minimum`/`maximum` bound a number's value, a string's length, or a list's item count. A
    list holds strings, each matching `item_pattern` (described to people as `item_format`).
    `aliases` are older values a choice param still takes, each standing for one choice."""

    name: str
    kind: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    description: str = ""
    item_pattern: str = ""
    item_format: str = ""
    aliases: tuple[tuple[Any, str], ...] = ()

    def check(self, value: Any) -> Any:
        """The value, checked and converted (an int given for a float becomes a float, an alias
        becomes its choice)."""
        label = f"params.{self.name}"
        for alias, choice in self.aliases:
            # `is`-strict on the type: 1 is no alias of True.
            if type(value) is type(alias) and value == alias:
                return choice
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{label} must be an integer")
            if not self._in_range(value):
                raise InvalidInput(f"{label} must be between {self.minimum} and {self.maximum}")
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"{label} must be a number")
            if not math.isfinite(value) or not self._in_range(value):
                raise InvalidInput(f"{label} must be between {self.minimum} and {self.maximum}")
            value = float(value)
        elif self.kind is bool:
            if not isinstance(value, bool):
                raise InvalidInput(f"{label} must be true or false")
        elif self.kind is str:
            if not isinstance(value, str):
                wanted = f"one of: {self._choices_text()}" if self.aliases else "a string"
                raise InvalidInput(f"{label} must be {wanted}")
            if self.choices and value not in self.choices:
                raise InvalidInput(f"{label} must be one of: {self._choices_text()}")
            if self.maximum is not None and len(value) > self.maximum:
                raise InvalidInput(f"{label} must be at most {int(self.maximum)} characters")
        elif self.kind is list:
            value = self._check_list(value, label)
        return value

    def _choices_text(self) -> str:
        aliases = ", ".join(f"{json.dumps(alias)} ({choice})" for alias, choice in self.aliases)
        return ", ".join(self.choices) + (f"; or {aliases}" if aliases else "")

    def _check_list(self, value: Any, label: str) -> list[str]:
        # One string of items separated by commas or spaces also does: what a form field sends.
        if isinstance(value, str):
            value = [item for item in re.split(r"[\s,]+", value) if item]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise InvalidInput(f"{label} must be a list of strings")
        if not self._in_range(len(value)):
            raise InvalidInput(
                f"{label} must hold {int(self.minimum or 0)} to {int(self.maximum or 0)} items"
            )
        if self.item_pattern:
            bad = [item for item in value if not re.fullmatch(self.item_pattern, item)]
            if bad:
                raise InvalidInput(f"{label}: {bad[0]!r} is not {self.item_format}")
        return value

    def _in_range(self, value: float) -> bool:
        return (self.minimum is None or value >= self.minimum) and (
            self.maximum is None or value <= self.maximum
        )

    def public(self) -> dict[str, Any]:
        """The rule as `/v1/models` lists it."""
        return {
            "type": self.kind.__name__,
            "default": self.default,
            **({"minimum": self.minimum} if self.minimum is not None else {}),
            **({"maximum": self.maximum} if self.maximum is not None else {}),
            **({"choices": list(self.choices)} if self.choices else {}),
            "required": self.required,
            **({"item_pattern": self.item_pattern} if self.item_pattern else {}),
            **(
                {"aliases": [{"value": alias, "means": choice} for alias, choice in self.aliases]}
                if self.aliases
                else {}
            ),
            **({"description": self.description} if self.description else {}),
        }

    def json_schema(self) -> dict[str, Any]:
        """The rule as a JSON Schema property, for the OpenAPI document."""
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.kind]}
        if self.kind is list:
            schema["items"] = {
                "type": "string",
                **({"pattern": self.item_pattern} if self.item_pattern else {}),
            }
        bounds = (
            ("minLength", "maxLength")
            if self.kind is str
            else ("minItems", "maxItems")
            if self.kind is list
            else ("minimum", "maximum")
        )
        for key, value in zip(bounds, (self.minimum, self.maximum), strict=True):
            if value is not None:
                schema[key] = int(value) if self.kind is not float else value
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.default is not None:
            schema["default"] = self.default
        if self.description:
            schema["description"] = self.description
        if self.aliases:
            # OpenAPI 3.0 has no list of types: one of the choices, or one of the older values.
            choice = {"type": schema.pop("type"), "enum": schema.pop("enum")}
            older = [
                {"type": _JSON_TYPES[type(alias)], "enum": [alias]} for alias, _ in self.aliases
            ]
            schema["anyOf"] = [choice, *older]
        return schema


@dataclass(frozen=True)
class Outputs:
    """What a completed job holds: its primary file (what `download_url` serves), the other
    files it stores, and the keys of its result summary (`/v1/jobs/{id}/results`)."""

    primary: str
    content_type: str
    files: tuple[str, ...]
    summary: tuple[str, ...]

    def public(self) -> dict[str, Any]:
        return {
            "primary": self.primary,
            "content_type": self.content_type,
            "files": list(self.files),
            "summary": list(self.summary),
        }


@dataclass(frozen=True)
class LengthPricing:
    """A price that grows with the input: `cost_credits` per started block of
    `residues_per_charge` residues (all chains together), for jobs whose `param` is `value`."""

    param: str
    value: str
    residues_per_charge: int

    def public(self) -> dict[str, Any]:
        return {
            self.param: self.value,
            "residues_per_charge": self.residues_per_charge,
            "description": (
                f"{self.param} {self.value}: cost_credits per started "
                f"{self.residues_per_charge} residues of all chains together (e.g. 2 x 300 "
                f"residues: 2 x cost_credits); otherwise cost_credits"
            ),
        }


# Options a runner's constructor takes, read from Django settings on the worker.
RunnerOptions = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class ModelSpec:
    id: str
    name: str
    description: str
    type: ModelType
    input_kind: InputKind
    cost_credits: int
    # Defaults of the per-model settings PHONOS_MAX_LENGTH_<ID> and PHONOS_TIME_LIMIT_<ID>.
    default_max_length: int
    default_time_limit: int
    queue: str
    outputs: Outputs
    # "package.module.Class", imported on the worker only.
    runner: str
    runner_options: RunnerOptions = field(default=lambda settings: {})
    # The setting whose value identifies the weights a worker loads (a checkpoint directory, a
    # hub id): part of every job key, so changing the weights never reuses old results. None:
    # the model has no weights (Vina's scoring function is code), its package version stands in.
    weights_setting: str | None = None
    weights_version: str = ""
    params: tuple[Param, ...] = ()
    # Several chains in one `sequence` (`A:B` or FASTA); `max_length` bounds all of them together.
    max_chains: int = 1
    # A docking model that crops the receptor to its search box: `max_length` bounds the
    # cropped receptor, which only the worker knows (its runner option `max_residues`).
    crops_receptor: bool = False
    length_pricing: LengthPricing | None = None

    @property
    def max_length_setting(self) -> str:
        return f"PHONOS_MAX_LENGTH_{self.id.upper()}"

    @property
    def time_limit_setting(self) -> str:
        return f"PHONOS_TIME_LIMIT_{self.id.upper()}"

    @property
    def max_length(self) -> int:
        from django.conf import settings

        return int(settings.PHONOS_MAX_LENGTH[self.id])

    @property
    def time_limit(self) -> int:
        from django.conf import settings

        return int(settings.PHONOS_TIME_LIMITS[self.id])

    @property
    def input_label(self) -> str:
        """How a job's `sequence` is labelled where people read it (the dashboard)."""
        return "Ligand (SMILES)" if self.input_kind == "ligand" else "Sequence"

    def weights_identity(self) -> str:
        """Which weights this deployment declares for the model: the job key's version part.
        The weights a worker actually used are recorded on each job (`Job.weights`)."""
        if self.weights_setting is None:
            return self.weights_version
        from django.conf import settings

        return f"{self.weights_version}{getattr(settings, self.weights_setting) or ''}"

    def cost(self, *, sequence: str, params: dict[str, Any]) -> int:
        """What a job of this model costs, for its checked sequence and params."""
        pricing = self.length_pricing
        if pricing is None or params.get(pricing.param) != pricing.value:
            return self.cost_credits
        residues = len(sequence.replace(CHAIN_SEPARATOR, ""))
        return self.cost_credits * math.ceil(residues / pricing.residues_per_charge)

    def param(self, name: str) -> Param:
        return next(param for param in self.params if param.name == name)

    def defaults(self) -> dict[str, Any]:
        return {param.name: param.default for param in self.params if param.default is not None}

    def params_with_defaults(self, params: dict[str, Any]) -> dict[str, Any]:
        """Params as a runner reads them: defaults filled in, nothing checked. Jobs arrive this
        way already (apps.jobs.catalog filled them at submission); benches and runner tests
        that call a runner directly pass theirs through here."""
        return {**self.defaults(), **params}

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "type": self.type,
            "input": self.input_kind,
            "cost_credits": self.cost_credits,
            **({"cost_rule": self.length_pricing.public()} if self.length_pricing else {}),
        }

    def params_public(self) -> dict[str, dict[str, Any]]:
        return {param.name: param.public() for param in (*self.params, *COMMON_PARAMS)}

    def params_json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "title": f"{self.name} parameters",
            "additionalProperties": False,
            "properties": {
                param.name: param.json_schema() for param in (*self.params, *COMMON_PARAMS)
            },
        }


# Parameters every model takes; they steer how a job is served, not what it computes, so they
# are not stored with the job's params nor part of its key.
COMMON_PARAMS = (
    Param(
        "cache",
        bool,
        True,
        description="Reuse an identical earlier result, or ride on an identical job in flight; "
        "false always runs the model (as does the header Cache-Control: no-cache)",
    ),
)

PROTEIN_JOB_ID_HELP = "A completed structure prediction job of this account, instead of protein_pdb"


def _esmfold_options(settings: Any) -> dict[str, Any]:
    return {
        "weights": settings.PHONOS_ESMFOLD_WEIGHTS,
        "device": settings.PHONOS_DEVICE or None,
        "local_files_only": not settings.PHONOS_MODEL_DOWNLOADS,
    }


def _alphafold2_options(settings: Any) -> dict[str, Any]:
    return {
        "data_dir": settings.PHONOS_COLABFOLD_DATA_DIR,
        "msa_server_url": settings.PHONOS_MSA_SERVER_URL,
        "msa_cache_dir": settings.PHONOS_MSA_CACHE_DIR,
        "msa_deadline_s": settings.PHONOS_MSA_DEADLINE_SECONDS,
        "msa_connect_timeout_s": settings.PHONOS_MSA_CONNECT_TIMEOUT_SECONDS,
        "msa_read_timeout_s": settings.PHONOS_MSA_READ_TIMEOUT_SECONDS,
    }


def _diffdock_options(settings: Any) -> dict[str, Any]:
    return {
        "diffdock_dir": settings.PHONOS_DIFFDOCK_DIR,
        "python": settings.PHONOS_DIFFDOCK_PYTHON,
        "device": settings.PHONOS_DEVICE or None,
    }


def _vina_options(settings: Any) -> dict[str, Any]:
    # Vina's length limit bounds the receptor cropped to the box, known only on the worker.
    return {"max_residues": settings.PHONOS_MAX_LENGTH["vina"]}


_STRUCTURE_SUMMARY = ("mean_plddt", "ptm", "samples", "best_sample")


def _docking_outputs(*, score: str) -> Outputs:
    """A docking model's outputs: the receptor with its best pose, all poses; `score` is the
    summary key of the best pose's score (each model scores poses its own way)."""
    return Outputs(
        primary="PDB of the receptor with the best pose",
        content_type="chemical/x-pdb",
        files=("<job id>.pdb", "poses.sdf", "confidence.json"),
        summary=(score, "num_poses", "samples", "best_sample"),
    )


# Ligand and reference-ligand files as text: a drug-like molecule is a few kB; this bounds what
# a request can hold.
_LIGAND_FILE_CHARS = 100_000
_DOCKING_RECEPTOR = (
    Param("protein_pdb", str, None, description="The receptor: the text of a PDB file"),
    Param("protein_job_id", str, None, description=PROTEIN_JOB_ID_HELP),
)
# The ligand as SMILES, SDF or MOL2 text (one of them): what both docking models, and NVIDIA's
# DiffDock service, take. apps.jobs.chemistry reads the files, at submission and on the worker.
_DOCKING_LIGAND = (
    Param("ligand_smiles", str, None, description="The ligand as SMILES"),
    Param(
        "ligand_sdf",
        str,
        None,
        maximum=_LIGAND_FILE_CHARS,
        description="The ligand as SDF (MOL) text, instead of SMILES",
    ),
    Param(
        "ligand_mol2",
        str,
        None,
        maximum=_LIGAND_FILE_CHARS,
        description="The ligand as Tripos MOL2 text (with its hydrogens), instead of SMILES",
    ),
)

MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="esmfold",
            name="ESMFold",
            description="Fast protein structure prediction from Meta AI",
            type="structure_prediction",
            input_kind="protein",
            cost_credits=10,
            default_max_length=1024,
            default_time_limit=30 * 60,
            queue="esmfold",
            runner="workers.runners.esmfold.EsmFoldRunner",
            runner_options=_esmfold_options,
            weights_setting="PHONOS_ESMFOLD_WEIGHTS",
            outputs=Outputs(
                primary="PDB, pLDDT in the B-factor column",
                content_type="chemical/x-pdb",
                files=("<job id>.pdb", "confidence.json"),
                summary=(*_STRUCTURE_SUMMARY, "max_pae"),
            ),
            params=(
                # At least one recycle, as the public API has always said; the runner itself
                # would take 0 (a single trunk pass), which only benchmarks use.
                Param("num_recycles", int, 4, 1, 24, description="Recycling iterations"),
                Param(
                    "chunk_size",
                    int,
                    128,
                    1,
                    4096,
                    description="Axial-attention chunk size: lower uses less memory, runs slower",
                ),
            ),
        ),
        ModelSpec(
            id="alphafold2",
            name="AlphaFold2",
            description="High-accuracy protein structure prediction from DeepMind",
            type="structure_prediction",
            input_kind="protein",
            cost_credits=50,
            default_max_length=1500,
            default_time_limit=4 * 3600,
            queue="alphafold2",
            runner="workers.runners.alphafold2.AlphaFold2Runner",
            runner_options=_alphafold2_options,
            weights_setting="PHONOS_COLABFOLD_DATA_DIR",
            max_chains=16,
            length_pricing=LengthPricing("model_preset", "multimer", residues_per_charge=500),
            outputs=Outputs(
                primary="PDB of the best-ranked model, pLDDT in the B-factor column",
                content_type="chemical/x-pdb",
                files=(
                    "<job id>.pdb",
                    "<name>_unrelaxed_<model>.pdb",
                    "<name>_scores_<model>.json",
                    "<name>.a3m",
                    "confidence.json",
                ),
                summary=_STRUCTURE_SUMMARY,
            ),
            params=(
                Param("max_msa_seqs", int, 512, 1, 8192, description="MSA depth"),
                Param(
                    "use_templates",
                    bool,
                    True,
                    description=(
                        "PDB templates from the MMseqs2 server's search; when not given: true "
                        "with msa_mode mmseqs2_server, false otherwise"
                    ),
                ),
                Param(
                    "model_preset",
                    str,
                    "monomer",
                    choices=("monomer", "monomer_casp14", "monomer_ptm", "multimer"),
                    description="AlphaFold2 parameter set; multimer (alphafold2_multimer_v3) "
                    "for several chains",
                ),
                Param("num_recycles", int, 3, 1, 24, description="Recycling iterations"),
                Param("num_models", int, 5, 1, 5, description="Models run and ranked"),
                Param(
                    "msa_mode",
                    str,
                    "mmseqs2_server",
                    choices=("mmseqs2_server", "single_sequence", "a3m"),
                    description="Where the MSA comes from",
                ),
                Param("a3m", str, None, description="The MSA (a3m text) for msa_mode a3m"),
            ),
        ),
        ModelSpec(
            id="diffdock",
            name="DiffDock",
            description="Molecular docking for protein-ligand interactions",
            type="docking",
            input_kind="ligand",
            cost_credits=30,
            default_max_length=2000,
            default_time_limit=60 * 60,
            queue="diffdock",
            runner="workers.runners.diffdock.DiffDockRunner",
            runner_options=_diffdock_options,
            weights_setting="PHONOS_DIFFDOCK_DIR",
            outputs=_docking_outputs(score="best_confidence"),
            params=(
                *_DOCKING_RECEPTOR,
                *_DOCKING_LIGAND,
                Param("inference_steps", int, 20, 10, 40, description="Reverse diffusion steps"),
                Param("samples_per_complex", int, 10, 1, 40, description="Poses sampled"),
            ),
        ),
        ModelSpec(
            id="vina",
            name="AutoDock Vina",
            description="Physics-based protein-ligand docking in a search box (CPU)",
            type="docking",
            input_kind="ligand",
            cost_credits=5,
            default_max_length=2000,
            default_time_limit=30 * 60,
            queue="vina",
            runner="workers.runners.vina.VinaRunner",
            runner_options=_vina_options,
            weights_version="vina-1.2",
            crops_receptor=True,
            outputs=_docking_outputs(score="best_affinity_kcal_mol"),
            params=(
                *_DOCKING_RECEPTOR,
                *_DOCKING_LIGAND,
                Param("ph", float, 7.4, 0, 14, description="Ligand protonation pH"),
                Param(
                    "keep_hetero",
                    str,
                    "cofactors",
                    choices=("none", "cofactors", "all"),
                    aliases=((True, "all"), (False, "none")),
                    description="Hetero residues kept in the receptor (waters never): none; "
                    "cofactors: metal ions and the cofactors listed in docs/docking.md (NAD(P)H, "
                    "FAD, FMN, heme, SAM, PLP, CoA, ...); or all that have a Chemical Component "
                    "Dictionary entry. true and false (older clients) mean all and none",
                ),
                # The pocket: a reference ligand, lining residues, or the box itself (one of
                # them); none: the box around the whole receptor.
                Param(
                    "pocket_ligand_sdf",
                    str,
                    None,
                    maximum=_LIGAND_FILE_CHARS,
                    description="A reference ligand (SDF, 3D): its bounding box plus "
                    "pocket_margin is the box",
                ),
                Param(
                    "pocket_residues",
                    list,
                    None,
                    1,
                    100,
                    item_pattern=r"^[A-Za-z0-9]{1,4}:-?\d{1,5}[A-Za-z]?$",
                    item_format="a residue: write CHAIN:NUMBER, e.g. 'A:45'",
                    description='Residues lining the pocket, e.g. ["A:45", "A:112"] (or one '
                    "string, separated by commas); their bounding box plus pocket_margin is the "
                    "box",
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
                Param(
                    "scoring",
                    str,
                    "vina",
                    choices=("vina", "vinardo"),
                    description="Scoring function; each pose is also scored by the other",
                ),
                Param(
                    "ranking",
                    str,
                    "consensus",
                    choices=("consensus", "score"),
                    description="Pose order: mean rank under vina and vinardo, or the score alone",
                ),
                Param("exhaustiveness", int, 8, 1, 32, description="Search effort"),
                Param("num_poses", int, 9, 1, 20, description="Ranked poses returned"),
                Param("seed", int, None, 0, 2**31 - 1, description="Random seed"),
            ),
        ),
    )
}

# Models whose completed jobs a docking job may take its receptor from (params.protein_job_id).
FOLD_MODEL_TYPE = "structure_prediction"


def model_spec(model_id: str) -> ModelSpec:
    """The registry entry of a model known to exist (a stored job's model)."""
    return MODELS[model_id]
