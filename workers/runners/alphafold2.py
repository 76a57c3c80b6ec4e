"""AlphaFold2 through ColabFold: chains, MSAs and templates in, ranked PDBs and confidences out.

The five AlphaFold2 models of a preset are loaded once per process with ColabFold's
`load_models_and_params` (one compiled network whose parameters are swapped per model, as
ColabFold does) and every job runs through ColabFold's `predict_structure`. One chain runs the
monomer presets; several chains (`A:B` in the sequence) run `alphafold2_multimer_v3`.
Templates are the MMseqs2 server's PDB70 hits and their mmCIF files (see docs/alphafold2.md).
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
    confidence_write,
    sequence_validate,
)
from workers.runners.msa import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MSA_SERVER_URL,
    DEFAULT_READ_TIMEOUT_S,
    MsaClient,
    TemplateHit,
    TemplateSearch,
)

logger = logging.getLogger(__name__)

DATA_DIR_SETTING = "PHONOS_COLABFOLD_DATA_DIR"
# Written next to `params/` by workers.af2_checkpoints: marks random weights and holds the
# config changes (fewer blocks) their shapes were made for.
MODEL_CONFIG_FILE = "phonos_model_config.json"
MODEL_NUMBERS = (1, 2, 3, 4, 5)
ALPHABET = "ACDEFGHIKLMNPQRSTVWYX"
CHAIN_SEPARATOR = ":"
MULTIMER_PRESET = "multimer"
# AlphaFold2 embeds at most four templates per chain (config data.eval.max_templates).
MAX_TEMPLATES = 4
TEMPLATES_NEED_SERVER = (
    "use_templates needs msa_mode 'mmseqs2_server': templates come from the MMseqs2 server's "
    "template search"
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
    # ColabFold's default for complexes: all five models have template weights and pTM/ipTM.
    MULTIMER_PRESET: Preset(model_type="alphafold2_multimer_v3", num_ensemble=1),
    # AlphaFold's CASP14 setting: the monomer models with eight-fold input ensembling.
    "monomer_casp14": Preset(model_type="alphafold2", num_ensemble=8),
    "monomer_ptm": Preset(model_type="alphafold2_ptm", num_ensemble=1),
}
# Loaded when the worker starts, where their files exist; CASP14 shares the monomer files but
# compiles its own network, so it loads on its first job.
_PRELOADED_PRESETS = ("monomer", "monomer_ptm", MULTIMER_PRESET)


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


_PARAMS_SUFFIX = {
    "alphafold2": "",
    "alphafold2_ptm": "_ptm",
    "alphafold2_multimer_v3": "_multimer_v3",
}


def params_file_name(model_type: str, model_number: int) -> str:
    return f"params_model_{model_number}{_PARAMS_SUFFIX[model_type]}.npz"


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
        # (preset, with templates) -> ColabFold's [(model name, RunModel, params)], in order.
        self._models: dict[tuple[str, bool], list[tuple[str, Any, Any]]] = {}
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
                self._ensure_loaded(name, templates=False)

    def resident_info(self) -> dict[str, Any]:
        import jax

        return {
            "device": jax.devices()[0].platform,
            "memory_bytes": None,
            "weights": self.data_dir + (" (untrained)" if self.untrained else ""),
        }

    def run(self, *, inputs: JobInputs, workdir: Path, progress: ProgressCallback) -> RunResult:
        # Validate before loading or searching so that bad input fails fast.
        chains = split_chains(inputs.sequence)
        params = _read_params(inputs.params)
        # Templates come from the MMseqs2 server's search: other MSA modes run without them.
        use_templates = bool(params.use_templates) and params.msa_mode == "mmseqs2_server"
        if use_templates and not self.msa_client.server_url:
            raise RunnerError(f"{TEMPLATES_NEED_SERVER}; no MSA server is configured")
        stem = _file_stem(inputs.name)
        workdir.mkdir(parents=True, exist_ok=True)
        # ColabFold features each distinct sequence once and copies it per chain.
        unique = list(dict.fromkeys(chains))

        msa_started = time.perf_counter()
        progress("msa", None)
        msas: list[str] = []
        depths: list[int] = []
        searches: list[TemplateSearch | None] = []
        msa_cached = True
        for index, chain in enumerate(unique):
            a3m, cached, search = self._msa(
                sequence=chain, params=params, scratch_dir=workdir / f"search_{index}"
            )
            aligned = _parse_a3m(a3m, sequence=chain)[: params.max_msa_seqs]
            msas.append("".join(f">{header}\n{row}\n" for header, row in aligned))
            depths.append(len(aligned))
            searches.append(search)
            msa_cached = msa_cached and cached
        msa_s = time.perf_counter() - msa_started

        multimer = params.model_preset == MULTIMER_PRESET
        # Multimer networks always hold template weights; monomer ones only when asked.
        key = (params.model_preset, use_templates and not multimer)
        with self._lock:
            # Under the lock: it imports ColabFold, which must not race the preload's import.
            template_features, templates_used = _template_features(chains, unique, searches)
            load_started = time.perf_counter()
            if key not in self._models:
                progress("loading_model", None)
            models = self._ensure_loaded(params.model_preset, templates=key[1])
            models = models[: params.num_models]
            load_s = time.perf_counter() - load_started

            inference_started = time.perf_counter()
            progress("inference", 0.0)
            prediction = self._predict(
                chains=chains,
                unique=unique,
                msas=msas,
                template_features=template_features,
                use_templates=use_templates,
                depth=max(depths),
                stem=stem,
                models=models,
                params=params,
                workdir=workdir,
                progress=progress,
            )
            inference_s = time.perf_counter() - inference_started

        writing_started = time.perf_counter()
        progress("writing_outputs", None)
        templates = {
            "requested": use_templates,
            "used": bool(templates_used),
            "templates": templates_used,
            **(
                {"searched": True, "reason": "the template search found no usable hit"}
                if use_templates and not templates_used
                else {}
            ),
            **({"models": _template_models(params, models)} if templates_used else {}),
        }
        files, summary = _write_outputs(
            chains=chains,
            stem=stem,
            msas=msas,
            templates=templates,
            prediction=prediction,
            workdir=workdir,
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
                "sequence_length": sum(len(chain) for chain in chains),
                "chains": len(chains),
                "params": {
                    "model_preset": params.model_preset,
                    "msa_mode": params.msa_mode,
                    "max_msa_seqs": params.max_msa_seqs,
                    "num_recycles": params.num_recycles,
                    "num_models": params.num_models,
                    "use_templates": use_templates,
                },
                "templates": {
                    **templates,
                    **(
                        {"cached": all(search.cached for search in searches if search)}
                        if use_templates
                        else {}
                    ),
                },
                "msa": {
                    "mode": params.msa_mode,
                    "sequences": depths[0] if len(depths) == 1 else depths,
                    **(
                        {"server": self.msa_client.server_url, "cached": msa_cached}
                        if params.msa_mode == "mmseqs2_server"
                        else {}
                    ),
                    # Each chain's own MSA; no paired (cross-chain) MSA is searched.
                    **({"pairing": "unpaired"} if multimer else {}),
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

    def _ensure_loaded(self, preset_name: str, *, templates: bool) -> list[tuple[str, Any, Any]]:
        if (preset_name, templates) in self._models:
            return self._models[(preset_name, templates)]
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
            models: list[tuple[str, Any, Any]] = load_models_and_params(
                num_models=len(MODEL_NUMBERS),
                use_templates=templates,
                num_ensemble=preset.num_ensemble,
                model_type=preset.model_type,
                data_dir=data_dir,
                rank_by=_rank_by(preset_name),
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
        self._models[(preset_name, templates)] = models
        logger.info(
            "loaded AlphaFold2 %s%s weights from %s in %.1f s%s",
            preset_name,
            " (templates)" if templates else "",
            data_dir,
            time.perf_counter() - started,
            " (untrained)" if self.untrained else "",
        )
        return models

    def _msa(
        self, *, sequence: str, params: AlphaFold2Params, scratch_dir: Path
    ) -> tuple[str, bool, TemplateSearch | None]:
        if params.msa_mode == "single_sequence":
            return f">query\n{sequence}\n", False, None
        if params.msa_mode == "a3m":
            assert params.a3m is not None
            return params.a3m, False, None
        if not self.msa_client.server_url:
            raise RunnerError("msa_mode 'mmseqs2_server' needs an MSA server; none is configured")
        if params.use_templates:
            return self.msa_client.fetch_with_templates(sequence, scratch_dir=scratch_dir)
        a3m, cached = self.msa_client.fetch(sequence)
        return a3m, cached, None

    def _predict(
        self,
        *,
        chains: list[str],
        unique: list[str],
        msas: list[str],
        template_features: list[dict[str, Any]],
        use_templates: bool,
        depth: int,
        stem: str,
        models: list[tuple[str, Any, Any]],
        params: AlphaFold2Params,
        workdir: Path,
        progress: ProgressCallback,
    ) -> dict[str, Any]:
        from colabfold.batch import generate_input_feature, predict_structure

        model_type = PRESETS[params.model_preset].model_type
        multimer = params.model_preset == MULTIMER_PRESET
        max_msa_clusters, max_extra_msa = _msa_shape(depth)
        feature_dict, _ = generate_input_feature(
            query_seqs_unique=unique,
            query_seqs_cardinality=[chains.count(chain) for chain in unique],
            unpaired_msa=msas,
            paired_msa=None,
            template_features=template_features,
            is_complex=multimer,
            model_type=model_type,
            # Multimer features are padded to this many MSA rows (plus four).
            max_seq=max_msa_clusters if multimer else _MAX_MSA_CLUSTERS,
        )
        if use_templates and not multimer:
            # Models 1 and 2 give MAX_TEMPLATES of their MSA rows to templates (as ColabFold).
            max_msa_clusters += MAX_TEMPLATES
        for model_runner in _distinct_runners(models):
            config = model_runner.config
            config.model.num_recycle = params.num_recycles
            if multimer:
                config.model.embeddings_and_evoformer.num_msa = max_msa_clusters
                config.model.embeddings_and_evoformer.num_extra_msa = max_extra_msa
            else:
                config.data.eval.max_msa_clusters = max_msa_clusters
                config.data.common.max_extra_msa = max_extra_msa
                config.data.common.num_recycle = params.num_recycles
        total_length = sum(len(chain) for chain in chains)

        models_done = 0

        def report_model(*_: object) -> None:
            nonlocal models_done
            models_done += 1
            progress("inference", models_done / len(models))

        prediction: dict[str, Any] = predict_structure(
            prefix=stem,
            result_dir=workdir,
            feature_dict=feature_dict,
            is_complex=multimer,
            use_templates=use_templates,
            sequences_lengths=[len(chain) for chain in chains],
            # Monomer inputs are padded in length; multimer ones in MSA depth (ColabFold pads
            # no multimer length).
            pad_len=math.ceil(total_length / _LENGTH_BUCKET) * _LENGTH_BUCKET,
            msa_pad_depth=max_msa_clusters + 4 if multimer else 0,
            model_type=model_type,
            model_runner_and_params=models,
            rank_by=_rank_by(params.model_preset),
            random_seed=_RANDOM_SEED,
            prediction_callback=report_model,
        )
        return prediction


def _write_outputs(
    *,
    chains: list[str],
    stem: str,
    msas: list[str],
    templates: dict[str, Any],
    prediction: dict[str, Any],
    workdir: Path,
) -> tuple[list[OutputFile], dict[str, Any]]:
    bounds = _chain_bounds(chains)
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
        ptm, iptm = metric.get("ptm"), metric.get("iptm")
        sample: dict[str, Any] = {
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
        if len(chains) > 1:
            sample["iptm"] = None if iptm is None else round(float(iptm), 4)
            sample["chain_plddt"] = {
                chain["id"]: round(
                    sum(scores["plddt"][chain["start"] : chain["end"]]) / chain["length"], 2
                )
                for chain in bounds
            }
        samples.append(sample)

    # One a3m per distinct chain, in ColabFold's multi-chain a3m order.
    a3m_path = workdir / f"{stem}.a3m"
    a3m_path.write_text("".join(msas))
    files.append(
        OutputFile(name=a3m_path.name, path=a3m_path, content_type="text/plain", role="msa")
    )

    best = samples[0]
    per_sample = ["index", "model", "file", "mean_plddt", "ptm"]
    summary: dict[str, Any] = {
        "mean_plddt": best["mean_plddt"],
        "ptm": best["ptm"],
        "max_pae": best["max_pae"],
        "templates": templates,
    }
    if len(chains) > 1:
        per_sample += ["iptm", "chain_plddt"]
        summary |= {"iptm": best["iptm"], "chain_plddt": best["chain_plddt"], "chains": bounds}
    summary |= {
        "samples": [{key: sample[key] for key in per_sample} for sample in samples],
        "best_sample": 0,
    }
    confidence = {
        **summary,
        "sequence": CHAIN_SEPARATOR.join(chains),
        "plddt": best["plddt"],
        "pae": best["pae"],
        "samples": samples,
    }
    files.append(confidence_write(workdir, confidence))
    return files, summary


def split_chains(sequence: str) -> list[str]:
    """The chains of `A:B` (the catalog stores FASTA input in this form)."""
    chains = [_validate_sequence(part) for part in sequence.split(CHAIN_SEPARATOR)]
    return chains


def _chain_bounds(chains: list[str]) -> list[dict[str, Any]]:
    """Chain ids as ColabFold's PDBs name them, with [start, end) residue offsets."""
    from alphafold.common.protein import PDB_CHAIN_IDS

    bounds, start = [], 0
    for index, chain in enumerate(chains):
        bounds.append(
            {
                "id": PDB_CHAIN_IDS[index],
                "start": start,
                "end": start + len(chain),
                "length": len(chain),
            }
        )
        start += len(chain)
    return bounds


def _rank_by(preset_name: str) -> str:
    # ColabFold ranks complexes by 0.8 ipTM + 0.2 pTM, single chains by mean pLDDT.
    return "multimer" if preset_name == MULTIMER_PRESET else "plddt"


def _template_models(params: AlphaFold2Params, models: list[tuple[str, Any, Any]]) -> list[str]:
    # Monomer models 3 to 5 have no template weights; all multimer models have them.
    names = [name for name, _, _ in models]
    if params.model_preset == MULTIMER_PRESET:
        return names
    return [name for name in names if name in ("model_1", "model_2")]


def _template_features(
    chains: list[str], unique: list[str], searches: list[TemplateSearch | None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """AlphaFold's template features per distinct chain, and the templates they hold."""
    from alphafold.common.protein import PDB_CHAIN_IDS
    from colabfold.batch import mk_mock_template

    features: list[dict[str, Any]] = []
    used: list[dict[str, Any]] = []
    for sequence, search in zip(unique, searches, strict=True):
        found = _templates_from_search(sequence, search) if search is not None else None
        if found is None:
            features.append(mk_mock_template(sequence))
            continue
        chain_features, hits = found
        features.append(chain_features)
        for hit in hits:
            used.append(
                {
                    # The job's chains this template serves (identical chains share it).
                    "query_chains": [
                        PDB_CHAIN_IDS[at] for at, chain in enumerate(chains) if chain == sequence
                    ],
                    "name": hit.name,
                    "pdb_id": hit.pdb_id,
                    "chain": hit.chain,
                    "identity": hit.identity,
                    "evalue": hit.evalue,
                }
            )
    return features, used


def _templates_from_search(
    sequence: str, search: TemplateSearch
) -> tuple[dict[str, Any], list[TemplateHit]] | None:
    """Featurise the server's hits with AlphaFold's own featurizer, or None without any.

    ColabFold realigns the hits with a local hhsearch over the archive's pdb70 files; here each
    hit is aligned inside the ranges the server reported, to its chain's SEQRES from the mmCIF
    (BLOSUM62, global): no HH-suite binary is needed, and the structure is the same file.
    """
    if search.mmcif_dir is None or not any(search.mmcif_dir.glob("*.cif")):
        return None
    from alphafold.data import mmcif_parsing, templates

    hits_by_name: dict[str, TemplateHit] = {}
    aligned = []
    for index, hit in enumerate(search.hits, start=1):
        cif = search.mmcif_dir / f"{hit.pdb_id}.cif"
        if not cif.is_file():
            continue
        parsed = mmcif_parsing.parse(file_id=hit.pdb_id, mmcif_string=cif.read_text())
        if parsed.mmcif_object is None:
            continue
        seqres = parsed.mmcif_object.chain_to_seqres.get(hit.chain)
        template_hit = _aligned_hit(index, hit, sequence, seqres) if seqres else None
        if template_hit is not None:
            aligned.append(template_hit)
            hits_by_name[hit.name] = hit
    if not aligned:
        return None
    featurizer = templates.HhsearchHitFeaturizer(
        mmcif_dir=str(search.mmcif_dir),
        max_template_date="2100-01-01",
        max_hits=MAX_TEMPLATES,
        # Only used to realign a hit whose sequence is not in its mmCIF; ours come from it.
        kalign_binary_path="kalign",
        release_dates_path=None,
        obsolete_pdbs_path=None,
    )
    result = featurizer.get_templates(query_sequence=sequence, hits=aligned)
    names = [name.decode() for name in result.features["template_domain_names"]]
    if not names:
        return None
    return dict(result.features), [hits_by_name[name] for name in names]


def _aligned_hit(index: int, hit: TemplateHit, query: str, seqres: str) -> Any:
    """An AlphaFold TemplateHit: the query and template ranges of an m8 row, aligned."""
    from alphafold.data import parsers
    from Bio.Align import PairwiseAligner, substitution_matrices

    query_part = query[hit.query_start - 1 : hit.query_end]
    target_part = seqres[hit.target_start - 1 : hit.target_end]
    if not query_part or not target_part:
        return None
    aligner = PairwiseAligner(
        mode="global",
        substitution_matrix=substitution_matrices.load("BLOSUM62"),
        open_gap_score=-11.0,
        extend_gap_score=-1.0,
    )
    alignment = aligner.align(query_part, target_part)[0]
    query_row, target_row = str(alignment[0]), str(alignment[1])
    indices_query, indices_hit = [], []
    query_at, target_at = hit.query_start - 1, hit.target_start - 1
    for query_char, target_char in zip(query_row, target_row, strict=True):
        indices_query.append(-1 if query_char == "-" else query_at)
        indices_hit.append(-1 if target_char == "-" else target_at)
        query_at += query_char != "-"
        target_at += target_char != "-"
    return parsers.TemplateHit(
        index=index,
        name=hit.name,
        aligned_cols=sum(q != "-" and h != "-" for q, h in zip(query_row, target_row, strict=True)),
        # The featurizer keeps the best hits by this; the server's bit score orders them.
        sum_probs=hit.bits,
        query=query_row,
        hit_sequence=target_row,
        indices_query=indices_query,
        indices_hit=indices_hit,
    )


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
    return sequence_validate(
        sequence,
        alphabet=ALPHABET,
        takes=f"AlphaFold2 takes chains of the residues {ALPHABET}, separated by "
        f"{CHAIN_SEPARATOR!r}",
    )


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
    which go together: templates need the MSA server, several chains need multimer) are the
    registry's and apps.jobs.catalog's alone, checked at submission; a direct call (a bench, a
    test) gets the registry's defaults here."""
    filled = MODELS["alphafold2"].params_with_defaults(params)
    values: dict[str, Any] = {name: filled.get(name) for name in _PARAM_NAMES}
    return AlphaFold2Params(**values)


def _file_stem(name: str) -> str:
    # Job names are user text; keep file names safe to join onto workdir and to serve.
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:64]
    return stem or "prediction"
