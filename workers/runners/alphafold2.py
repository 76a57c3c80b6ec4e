"""AlphaFold2 through ColabFold: one chain and its MSA in, ranked PDBs and confidences out.

The five AlphaFold2 models of a preset are loaded once per process with ColabFold's
`load_models_and_params` (one compiled network whose parameters are swapped per model, as
ColabFold does) and every job runs through ColabFold's `predict_structure`. Templates are not
used: see docs/alphafold2.md.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apps.jobs.registry import MODELS
from workers.runners.base import (
    JobInputs,
    OutputFile,
    ProgressCallback,
    RunnerError,
    RunResult,
)
from workers.runners.msa import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MSA_SERVER_URL,
    DEFAULT_READ_TIMEOUT_S,
    MsaClient,
)

logger = logging.getLogger(__name__)

DATA_DIR_SETTING = "PHONOS_COLABFOLD_DATA_DIR"
# Written next to `params/` by workers.af2_checkpoints: marks random weights and holds the
# config changes (fewer blocks) their shapes were made for.
MODEL_CONFIG_FILE = "phonos_model_config.json"
CONFIDENCE_FILE = "confidence.json"
MODEL_NUMBERS = (1, 2, 3, 4, 5)
ALPHABET = "ACDEFGHIKLMNPQRSTVWYX"
TEMPLATES_UNAVAILABLE = (
    "templates need a PDB mmCIF template database, which this deployment does not have; "
    "the models ran without templates"
)

# AlphaFold2's own limits on the two MSA inputs (clustered and extra sequences).
_MAX_MSA_CLUSTERS = 512
_MAX_EXTRA_MSA = 5120
# Chains are padded up to a multiple of this, and MSA depths to a power of two, so that jobs of
# similar size reuse one compiled network instead of compiling their own (padding is masked).
_LENGTH_BUCKET = 32
_RANDOM_SEED = 0


@dataclass(frozen=True)
class Preset:
    # ColabFold's name for the parameter set: alphafold2 reads params_model_N.npz,
    # alphafold2_ptm reads params_model_N_ptm.npz (models with the pTM/PAE head).
    model_type: str
    num_ensemble: int


PRESETS: dict[str, Preset] = {
    "monomer": Preset(model_type="alphafold2", num_ensemble=1),
    # AlphaFold's CASP14 setting: the monomer models with eight-fold input ensembling.
    "monomer_casp14": Preset(model_type="alphafold2", num_ensemble=8),
    "monomer_ptm": Preset(model_type="alphafold2_ptm", num_ensemble=1),
}
# Loaded when the worker starts, where their files exist; CASP14 shares the monomer files but
# compiles its own network, so it loads on its first job.
_PRELOADED_PRESETS = ("monomer", "monomer_ptm")


@dataclass(frozen=True, kw_only=True)
class AlphaFold2Params:
    model_preset: str
    max_msa_seqs: int
    use_templates: bool
    num_recycles: int
    num_models: int
    msa_mode: str
    a3m: str | None


_PARAM_NAMES = tuple(AlphaFold2Params.__dataclass_fields__)


def params_file_name(model_type: str, model_number: int) -> str:
    suffix = "_ptm" if model_type == "alphafold2_ptm" else ""
    return f"params_model_{model_number}{suffix}.npz"


def apply_config_overrides(config: Any, overrides: dict[str, Any]) -> None:
    """Set dotted keys (`model.embeddings_and_evoformer.evoformer_num_block`) on a ConfigDict."""
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for name in parents:
            node = node[name]
        if leaf not in node:
            raise KeyError(f"{dotted} is not an AlphaFold2 config key")
        node[leaf] = value


def read_model_config(data_dir: Path) -> dict[str, Any]:
    """The data directory's marker file, or {} for real weights (which have none)."""
    marker = data_dir / MODEL_CONFIG_FILE
    if not marker.is_file():
        return {}
    try:
        content: dict[str, Any] = json.loads(marker.read_text())
    except ValueError as exc:
        raise RunnerError(f"{marker} is not valid JSON ({exc})") from None
    return content


class AlphaFold2Runner:
    model_id = "alphafold2"

    def __init__(
        self,
        *,
        data_dir: str = "",
        msa_server_url: str = DEFAULT_MSA_SERVER_URL,
        msa_cache_dir: str = "",
        msa_poll_interval_s: float = 5.0,
        msa_deadline_s: float = 3600.0,
        msa_connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        msa_read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        self.data_dir = data_dir
        self.msa_client = MsaClient(
            server_url=msa_server_url,
            cache_dir=Path(msa_cache_dir) if msa_cache_dir else None,
            user_agent=f"phonos/{_version('phonos')}",
            poll_interval_s=msa_poll_interval_s,
            max_wait_s=msa_deadline_s,
            connect_timeout_s=msa_connect_timeout_s,
            read_timeout_s=msa_read_timeout_s,
        )
        # preset -> ColabFold's [(model name, RunModel, params)], in model order.
        self._models: dict[str, list[tuple[str, Any, Any]]] = {}
        self._model_config: dict[str, Any] | None = None
        # One lock for loading and inference: jobs change the shared networks' configs.
        self._lock = threading.Lock()

    @property
    def untrained(self) -> bool:
        return bool((self._model_config or {}).get("untrained", False))

    def load(self) -> None:
        with self._lock:
            data_dir = self._data_dir()
            available = [
                name
                for name in _PRELOADED_PRESETS
                if not _missing_params(data_dir, PRESETS[name].model_type)
            ]
            if not available:
                raise RunnerError(
                    f"{data_dir / 'params'} holds neither params_model_1..5.npz nor "
                    f"params_model_1..5_ptm.npz; set {DATA_DIR_SETTING} to a ColabFold data "
                    "directory with AlphaFold2 weights"
                )
            for name in available:
                self._ensure_loaded(name)

    def resident_info(self) -> dict[str, Any]:
        import jax

        return {
            "device": jax.devices()[0].platform,
            "memory_bytes": None,
            "weights": self.data_dir + (" (untrained)" if self.untrained else ""),
        }

    def run(self, *, inputs: JobInputs, workdir: Path, progress: ProgressCallback) -> RunResult:
        # Validate before loading or searching so that bad input fails fast.
        sequence = _validate_sequence(inputs.sequence)
        params = _read_params(inputs.params)
        stem = _file_stem(inputs.name)
        workdir.mkdir(parents=True, exist_ok=True)

        msa_started = time.perf_counter()
        progress("msa", None)
        a3m, msa_cached = self._msa(sequence=sequence, params=params)
        aligned = _parse_a3m(a3m, sequence=sequence)[: params.max_msa_seqs]
        a3m_used = "".join(f">{header}\n{row}\n" for header, row in aligned)
        msa_s = time.perf_counter() - msa_started

        with self._lock:
            load_started = time.perf_counter()
            if params.model_preset not in self._models:
                progress("loading_model", None)
            models = self._ensure_loaded(params.model_preset)[: params.num_models]
            load_s = time.perf_counter() - load_started

            inference_started = time.perf_counter()
            progress("inference", 0.0)
            prediction = self._predict(
                sequence=sequence,
                a3m=a3m_used,
                depth=len(aligned),
                stem=stem,
                models=models,
                params=params,
                workdir=workdir,
                progress=progress,
            )
            inference_s = time.perf_counter() - inference_started

        writing_started = time.perf_counter()
        progress("writing_outputs", None)
        files, summary = _write_outputs(
            sequence=sequence, stem=stem, a3m=a3m_used, prediction=prediction, workdir=workdir
        )
        write_s = time.perf_counter() - writing_started

        import jax

        return RunResult(
            files=files,
            # ColabFold ranks monomer models by mean pLDDT: the first sample is the best.
            primary_file=summary["samples"][0]["file"],
            summary=summary,
            metadata={
                "model_id": self.model_id,
                "weights": self.data_dir,
                "untrained": self.untrained,
                "device": jax.devices()[0].platform,
                "sequence_length": len(sequence),
                "params": {
                    "model_preset": params.model_preset,
                    "msa_mode": params.msa_mode,
                    "max_msa_seqs": params.max_msa_seqs,
                    "num_recycles": params.num_recycles,
                    "num_models": params.num_models,
                    "use_templates": params.use_templates,
                },
                "templates": {
                    "requested": params.use_templates,
                    "used": False,
                    **({"reason": TEMPLATES_UNAVAILABLE} if params.use_templates else {}),
                },
                "msa": {
                    "mode": params.msa_mode,
                    "sequences": len(aligned),
                    **(
                        {"server": self.msa_client.server_url, "cached": msa_cached}
                        if params.msa_mode == "mmseqs2_server"
                        else {}
                    ),
                },
                "versions": {
                    "colabfold": _version("colabfold"),
                    "alphafold-colabfold": _version("alphafold-colabfold"),
                    "jax": jax.__version__,
                },
                "timings": {
                    "msa_s": round(msa_s, 3),
                    "load_s": round(load_s, 3),
                    "inference_s": round(inference_s, 3),
                    "write_s": round(write_s, 3),
                },
            },
        )

    def _data_dir(self) -> Path:
        if not self.data_dir:
            raise RunnerError(
                f"no AlphaFold2 weights are configured; set {DATA_DIR_SETTING} to a ColabFold "
                "data directory (one holding params/params_model_N.npz)"
            )
        data_dir = Path(self.data_dir).expanduser()
        if not (data_dir / "params").is_dir():
            raise RunnerError(
                f"ColabFold data directory {self.data_dir!r} has no params/ folder; set "
                f"{DATA_DIR_SETTING} to a directory holding params/params_model_N.npz"
            )
        return data_dir

    def _ensure_loaded(self, preset_name: str) -> list[tuple[str, Any, Any]]:
        if preset_name in self._models:
            return self._models[preset_name]
        preset = PRESETS[preset_name]
        data_dir = self._data_dir()
        missing = _missing_params(data_dir, preset.model_type)
        if missing:
            raise RunnerError(
                f"the {preset_name} preset needs {', '.join(missing)} in {data_dir / 'params'}; "
                f"set {DATA_DIR_SETTING} to a ColabFold data directory with those weights"
            )
        if self._model_config is None:
            self._model_config = read_model_config(data_dir)
        try:
            from colabfold.alphafold.models import load_models_and_params
        except ImportError as exc:
            raise RunnerError(
                f"ColabFold is not installed on this worker ({exc}); install the alphafold2 "
                "extra: pip install -e '.[alphafold2]'"
            ) from exc

        started = time.perf_counter()
        try:
            models = load_models_and_params(
                num_models=len(MODEL_NUMBERS),
                use_templates=False,
                num_ensemble=preset.num_ensemble,
                model_type=preset.model_type,
                data_dir=data_dir,
                rank_by="plddt",
            )
            # Haiku builds the network from the runner's config when it first traces, so
            # changes made here (fewer blocks, for random smoke-test weights) take effect.
            overrides = self._model_config.get("config_overrides", {})
            for model_runner in _distinct_runners(models):
                apply_config_overrides(model_runner.config, overrides)
        # A corrupt or foreign npz fails in numpy, haiku or ColabFold in many ways; all mean the
        # configured weights are unusable.
        except Exception as exc:
            raise RunnerError(
                f"could not load AlphaFold2 weights from {data_dir / 'params'} ({exc}); set "
                f"{DATA_DIR_SETTING} to a ColabFold data directory with AlphaFold2 weights"
            ) from exc
        self._models[preset_name] = models
        logger.info(
            "loaded AlphaFold2 %s weights from %s in %.1f s%s",
            preset_name,
            data_dir,
            time.perf_counter() - started,
            " (untrained)" if self.untrained else "",
        )
        return models

    def _msa(self, *, sequence: str, params: AlphaFold2Params) -> tuple[str, bool]:
        if params.msa_mode == "single_sequence":
            return f">query\n{sequence}\n", False
        if params.msa_mode == "a3m":
            assert params.a3m is not None
            return params.a3m, False
        return self.msa_client.fetch(sequence)

    def _predict(
        self,
        *,
        sequence: str,
        a3m: str,
        depth: int,
        stem: str,
        models: list[tuple[str, Any, Any]],
        params: AlphaFold2Params,
        workdir: Path,
        progress: ProgressCallback,
    ) -> dict[str, Any]:
        from colabfold.batch import generate_input_feature, mk_mock_template, predict_structure

        model_type = PRESETS[params.model_preset].model_type
        feature_dict, _ = generate_input_feature(
            query_seqs_unique=[sequence],
            query_seqs_cardinality=[1],
            unpaired_msa=[a3m],
            paired_msa=None,
            template_features=[mk_mock_template(sequence)],
            is_complex=False,
            model_type=model_type,
            max_seq=_MAX_MSA_CLUSTERS,
        )
        max_msa_clusters, max_extra_msa = _msa_shape(depth)
        for model_runner in _distinct_runners(models):
            config = model_runner.config
            config.data.eval.max_msa_clusters = max_msa_clusters
            config.data.common.max_extra_msa = max_extra_msa
            config.data.common.num_recycle = params.num_recycles
            config.model.num_recycle = params.num_recycles

        models_done = 0

        def report_model(*_: object) -> None:
            nonlocal models_done
            models_done += 1
            progress("inference", models_done / len(models))

        prediction: dict[str, Any] = predict_structure(
            prefix=stem,
            result_dir=workdir,
            feature_dict=feature_dict,
            is_complex=False,
            use_templates=False,
            sequences_lengths=[len(sequence)],
            pad_len=math.ceil(len(sequence) / _LENGTH_BUCKET) * _LENGTH_BUCKET,
            model_type=model_type,
            model_runner_and_params=models,
            rank_by="plddt",
            random_seed=_RANDOM_SEED,
            prediction_callback=report_model,
        )
        return prediction


def _write_outputs(
    *, sequence: str, stem: str, a3m: str, prediction: dict[str, Any], workdir: Path
) -> tuple[list[OutputFile], dict[str, Any]]:
    files: list[OutputFile] = []
    samples: list[dict[str, Any]] = []
    for index, (tag, metric) in enumerate(
        zip(prediction["rank"], prediction["metric"], strict=True)
    ):
        pdb_path = workdir / f"{stem}_unrelaxed_{tag}.pdb"
        scores_path = workdir / f"{stem}_scores_{tag}.json"
        scores = json.loads(scores_path.read_text())
        files.append(
            OutputFile(
                name=pdb_path.name,
                path=pdb_path,
                content_type="chemical/x-pdb",
                role="structure",
            )
        )
        files.append(
            OutputFile(
                name=scores_path.name,
                path=scores_path,
                content_type="application/json",
                role="confidence",
            )
        )
        ptm = metric.get("ptm")
        samples.append(
            {
                "index": index,
                "rank": index + 1,
                "model": _model_name(tag),
                "file": pdb_path.name,
                "scores_file": scores_path.name,
                "mean_plddt": round(float(metric["mean_plddt"]), 2),
                "ptm": None if ptm is None else round(float(ptm), 4),
                "max_pae": scores.get("max_pae"),
                "plddt": scores["plddt"],
                "pae": scores.get("pae"),
            }
        )

    a3m_path = workdir / f"{stem}.a3m"
    a3m_path.write_text(a3m)
    files.append(
        OutputFile(name=a3m_path.name, path=a3m_path, content_type="text/plain", role="msa")
    )

    best = samples[0]
    summary: dict[str, Any] = {
        "mean_plddt": best["mean_plddt"],
        "ptm": best["ptm"],
        "max_pae": best["max_pae"],
        "samples": [
            {key: sample[key] for key in ("index", "model", "file", "mean_plddt", "ptm")}
            for sample in samples
        ],
        "best_sample": 0,
    }
    confidence_path = workdir / CONFIDENCE_FILE
    confidence = {
        **summary,
        "sequence": sequence,
        "plddt": best["plddt"],
        "pae": best["pae"],
        "samples": samples,
    }
    confidence_path.write_text(json.dumps(confidence))
    files.append(
        OutputFile(
            name=CONFIDENCE_FILE,
            path=confidence_path,
            content_type="application/json",
            role="confidence",
        )
    )
    return files, summary


def _missing_params(data_dir: Path, model_type: str) -> list[str]:
    names = [params_file_name(model_type, number) for number in MODEL_NUMBERS]
    return [name for name in names if not (data_dir / "params" / name).is_file()]


def _distinct_runners(models: list[tuple[str, Any, Any]]) -> list[Any]:
    # ColabFold shares one compiled RunModel between models whose parameters it swaps.
    runners: dict[int, Any] = {}
    for _, model_runner, _ in models:
        runners.setdefault(id(model_runner), model_runner)
    return list(runners.values())


def _msa_shape(depth: int) -> tuple[int, int]:
    """Cluster and extra-MSA sizes for an MSA of `depth` rows, rounded up to powers of two."""
    clusters = min(_next_power_of_two(depth), _MAX_MSA_CLUSTERS)
    extra = min(_next_power_of_two(max(depth - clusters, 1)), _MAX_EXTRA_MSA)
    return clusters, extra


def _next_power_of_two(value: int) -> int:
    return 1 << max(value - 1, 0).bit_length()


def _model_name(tag: str) -> str:
    match = re.search(r"model_\d", tag)
    return match.group() if match else tag


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _validate_sequence(sequence: str) -> str:
    sequence = sequence.strip().upper()
    if not sequence:
        raise RunnerError("the sequence is empty")
    invalid = sorted(set(sequence) - set(ALPHABET))
    if invalid:
        raise RunnerError(
            f"the sequence contains unsupported characters {''.join(invalid)!r}; "
            f"AlphaFold2 takes one chain of the residues {ALPHABET}"
        )
    return sequence


def _parse_a3m(a3m: str, *, sequence: str) -> list[tuple[str, str]]:
    """(header, row) records; the first must be the query, every row aligned to it."""
    records: list[tuple[str, list[str]]] = []
    for raw_line in a3m.replace("\x00", "").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(">"):
            records.append((line[1:], []))
        elif not records:
            raise RunnerError("the a3m must start with a '>' header line")
        else:
            records[-1][1].append(line)
    if not records:
        raise RunnerError("the a3m holds no sequences")
    aligned = [(header, "".join(parts)) for header, parts in records]
    query = aligned[0][1]
    if query.replace("-", "").upper() != sequence:
        raise RunnerError("the a3m's first sequence must be the job's sequence")
    for number, (_, row) in enumerate(aligned, start=1):
        # Lowercase letters are insertions relative to the query and do not count.
        columns = sum(1 for char in row if not char.islower() and char != ".")
        if columns != len(sequence):
            raise RunnerError(
                f"a3m sequence {number} has {columns} aligned columns; the query has "
                f"{len(sequence)}"
            )
    return aligned


def _read_params(params: dict[str, Any]) -> AlphaFold2Params:
    """The job's params as the runner uses them. Their rules (names, ranges, choices, defaults,
    which go together) are the registry's and apps.jobs.catalog's alone: checked at
    submission; a direct call (a bench, a test) gets the registry's defaults here."""
    filled = MODELS["alphafold2"].params_with_defaults(params)
    return AlphaFold2Params(**{name: filled.get(name) for name in _PARAM_NAMES})


def _file_stem(name: str) -> str:
    # Job names are user text; keep file names safe to join onto workdir and to serve.
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:64]
    return stem or "prediction"
