"""ESMFold through transformers' `EsmForProteinFolding`: one chain in, a PDB and confidences out."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import transformers
from transformers import EsmForProteinFolding
from transformers.models.esm.openfold_utils import residue_constants
from transformers.models.esm.openfold_utils.loss import compute_tm

from apps.jobs.registry import MODELS
from workers.runners.base import (
    JobInputs,
    OutputFile,
    ProgressCallback,
    ProgressStage,
    RunnerError,
    RunResult,
    confidence_write,
    sequence_validate,
)

logger = logging.getLogger(__name__)

WEIGHTS_SETTING = "PHONOS_ESMFOLD_WEIGHTS"
DEFAULT_WEIGHTS = "facebook/esmfold_v1"
# AlphaFold2 residue order, as `EsmForProteinFolding.forward` expects its input ids.
ALPHABET = "".join(residue_constants.restypes_with_x)
# config.json key that marks a checkpoint as random weights (see workers.checkpoints).
UNTRAINED_CONFIG_KEY = "phonos_untrained"
# The pTM and PAE heads' largest distance bin, in Å, as `EsmForProteinFolding.forward` uses it.
PAE_MAX_BIN = 31
# The language model's precision on GPU (CPUs run it in fp32); bf16 where the GPU supports it.
GPU_LM_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}

_CA_ATOM_INDEX = residue_constants.atom_order["CA"]
# `positions` are in the atom14 layout, where CA is the second atom of every residue type.
_CA_ATOM14_INDEX = 1
_PDB_OUTPUT_KEYS = (
    "positions",
    "aatype",
    "atom37_atom_exists",
    "residx_atom37_to_atom14",
    "residue_index",
)


@dataclass(frozen=True, kw_only=True)
class EsmFoldParams:
    # Axial-attention chunk size: lower uses less memory and runs slower; None disables chunking.
    chunk_size: int | None
    # None keeps the checkpoint's trained default (max_recycles trunk passes in all); an int n
    # runs n + 1 passes, as transformers and fair-esm define it.
    num_recycles: int | None


@dataclass(frozen=True, kw_only=True)
class BatchItem:
    """One job of a batched fold: what `EsmFoldRunner.run` takes."""

    inputs: JobInputs
    workdir: Path
    progress: ProgressCallback


@dataclass(frozen=True, kw_only=True)
class BatchLimits:
    # Residues in one forward pass, padding included: jobs x the longest chain among them.
    max_tokens: int
    max_jobs: int
    # The largest share of a forward pass's residues that may be padding.
    max_padding: float


# A job's outcome in a batch: its result, or the exception that ended it alone.
BatchOutcome = RunResult | Exception


def batch_plan(items: Sequence[BatchItem], limits: BatchLimits) -> list[list[int]]:
    """Group `items` (by index) into forward passes: one parameter set each, similar lengths.

    Within a parameter set, chains are taken shortest first and a pass closes when the next
    chain would break a limit, so each pass pads only up to a chain of about its own length.
    A job with invalid input gets a group of its own, in which `run_batch` reports its error.
    """
    groups: list[list[int]] = []
    by_params: dict[EsmFoldParams, list[tuple[int, int]]] = {}
    for index, item in enumerate(items):
        try:
            length = len(_validate_sequence(item.inputs.sequence))
            params = _read_params(item.inputs.params)
        except RunnerError:
            groups.append([index])
            continue
        by_params.setdefault(params, []).append((length, index))
    for members in by_params.values():
        group: list[int] = []
        residues = 0
        for length, index in sorted(members):
            # Sorted by length: this chain is the longest of the group it joins.
            size = len(group) + 1
            padded = size * length
            too_wasteful = 1 - (residues + length) / padded > limits.max_padding
            if group and (size > limits.max_jobs or padded > limits.max_tokens or too_wasteful):
                groups.append(group)
                group, residues = [], 0
            group.append(index)
            residues += length
        groups.append(group)
    return groups


class _JobProgress:
    """A job's progress callback that keeps, rather than raises, the first exception it throws
    (cancelled, out of time): that ends the job, not the forward pass its batch mates share."""

    def __init__(self, callback: ProgressCallback) -> None:
        self.callback = callback
        self.error: Exception | None = None

    def __call__(self, stage: ProgressStage, fraction: float | None) -> None:
        if self.error is not None:
            return
        try:
            self.callback(stage, fraction)
        except Exception as error:
            self.error = error


@dataclass(frozen=True, kw_only=True)
class _BatchJob:
    index: int
    item: BatchItem
    sequence: str
    params: EsmFoldParams
    progress: _JobProgress


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """One chain's unrounded outputs, cropped from its row of a (padded) forward pass."""

    # What `EsmForProteinFolding.output_to_pdb` reads, for this chain alone (batch of one).
    pdb_inputs: dict[str, torch.Tensor]
    # Per residue, 0-100 (the CA atom's).
    plddt: list[float]
    # (L, L) in Å, on the CPU.
    pae: torch.Tensor
    ptm: float

    @property
    def ca_positions(self) -> torch.Tensor:
        """(L, 3) in Å: the last structure-module block's CA atoms."""
        return self.pdb_inputs["positions"][-1, 0, :, _CA_ATOM14_INDEX].float().cpu()


def _chain_prediction(
    *, output: dict[str, torch.Tensor], row: int, length: int, model: EsmForProteinFolding
) -> Prediction:
    # This chain alone: its row of the batch, cropped to its own length.
    crop = {
        key: output[key][row : row + 1, :length]
        for key in (
            "aatype",
            "atom37_atom_exists",
            "residx_atom37_to_atom14",
            "residue_index",
            "plddt",
        )
    }
    crop["positions"] = output["positions"][:, row : row + 1, :length]
    # transformers' pTM takes its d0 from the padded length and the best row of the whole
    # batch: computed again on this chain's own pairs, it equals a lone run's.
    ptm = compute_tm(
        output["ptm_logits"][row, :length, :length].float(),
        max_bin=PAE_MAX_BIN,
        no_bins=model.distogram_bins,
    )
    return Prediction(
        pdb_inputs=crop,
        plddt=_per_residue_plddt(crop),
        pae=output["predicted_aligned_error"][row, :length, :length].float().cpu(),
        ptm=float(ptm),
    )


def _ignore_progress(stage: ProgressStage, fraction: float | None) -> None:
    pass


class _EveryJobStopped(Exception):
    """Every job of a forward pass was cancelled or timed out: nobody needs the rest of it."""


class EsmFoldRunner:
    model_id = "esmfold"

    def __init__(
        self,
        *,
        weights: str = DEFAULT_WEIGHTS,
        device: str | None = None,
        local_files_only: bool = False,
        gpu_lm_dtype: str = "float16",
    ) -> None:
        if gpu_lm_dtype not in GPU_LM_DTYPES:
            raise RunnerError(f"gpu_lm_dtype must be one of {', '.join(GPU_LM_DTYPES)}")
        self.weights = weights
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.local_files_only = local_files_only
        self.gpu_lm_dtype = GPU_LM_DTYPES[gpu_lm_dtype]
        self._model: EsmForProteinFolding | None = None
        self._untrained = False
        # One lock for loading and inference: the resident model is shared state (chunk size).
        self._lock = threading.Lock()

    @property
    def model(self) -> EsmForProteinFolding:
        if self._model is None:
            raise RuntimeError("EsmFoldRunner.load() has not been called")
        return self._model

    def load(self) -> None:
        with self._lock:
            self._ensure_loaded()

    def resident_info(self) -> dict[str, Any]:
        """Where the loaded model lives, what its tensors take, and which weights they are."""
        model = self.model
        tensors = [*model.parameters(), *model.buffers()]
        return {
            "device": self.device,
            "memory_bytes": sum(tensor.numel() * tensor.element_size() for tensor in tensors),
            "weights": self.weights + (" (untrained)" if self._untrained else ""),
        }

    def run(self, *, inputs: JobInputs, workdir: Path, progress: ProgressCallback) -> RunResult:
        (outcome,) = self.run_batch([BatchItem(inputs=inputs, workdir=workdir, progress=progress)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def run_batch(self, items: Sequence[BatchItem]) -> list[BatchOutcome]:
        """Fold `items` in one forward pass; each job's outputs are those of a lone run.

        The items must share one parameter set (`batch_plan` groups them so). Bad input, or an
        exception from a job's progress callback, ends that job only: its outcome is the
        exception, and the other chains fold on. Outcomes come back in the order of `items`.
        """
        outcomes: dict[int, BatchOutcome] = {}
        jobs: list[_BatchJob] = []
        for index, item in enumerate(items):
            # Validate before loading so that bad input fails fast, even on a cold worker.
            try:
                sequence = _validate_sequence(item.inputs.sequence)
                params = _read_params(item.inputs.params)
            except RunnerError as error:
                outcomes[index] = error
                continue
            jobs.append(
                _BatchJob(
                    index=index,
                    item=item,
                    sequence=sequence,
                    params=params,
                    progress=_JobProgress(item.progress),
                )
            )
        if len({job.params for job in jobs}) > 1:
            raise ValueError("one forward pass takes one parameter set; group with batch_plan")
        if jobs:
            outcomes.update(self._run_jobs(jobs))
        return [outcomes[index] for index in range(len(items))]

    def _run_jobs(self, jobs: list[_BatchJob]) -> dict[int, BatchOutcome]:
        output: dict[str, torch.Tensor] | None = None
        with self._lock:
            load_started = time.perf_counter()
            if self._model is None:
                for job in jobs:
                    job.progress("loading_model", None)
            try:
                model = self._ensure_loaded()
            except RunnerError as error:
                return {job.index: error for job in jobs}
            load_s = time.perf_counter() - load_started

            inference_started = time.perf_counter()
            for job in jobs:
                job.progress("inference", 0.0)
            try:
                if any(job.progress.error is None for job in jobs):
                    output = self._fold(model=model, jobs=jobs)
            except _EveryJobStopped:
                pass
            except Exception as exc:
                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
                if len(jobs) == 1:
                    return {jobs[0].index: _fold_error(jobs[0], exc)}
                # Fold them one by one instead, so that whatever broke the batch (its memory,
                # one odd chain) fails only the job it belongs to.
                logger.warning(
                    "a batch of %d ESMFold jobs failed (%s); folding them one at a time",
                    len(jobs),
                    type(exc).__name__,
                )
            inference_s = time.perf_counter() - inference_started

        outcomes: dict[int, BatchOutcome] = {}
        if output is None:
            # Every job stopped, each with its own exception, or the batch failed: the jobs
            # still wanted are folded one at a time.
            for job in jobs:
                if job.progress.error is not None:
                    outcomes[job.index] = job.progress.error
                else:
                    outcomes.update(self._run_jobs([job]))
            return outcomes

        padded_length = max(len(job.sequence) for job in jobs)
        for row, job in enumerate(jobs):
            job.progress("writing_outputs", None)
            if job.progress.error is not None:
                outcomes[job.index] = job.progress.error
                continue
            writing_started = time.perf_counter()
            try:
                result = self._write_outputs(job=job, output=output, row=row)
            except Exception as error:
                outcomes[job.index] = error
                continue
            result.metadata["batch"] = {"size": len(jobs), "padded_length": padded_length}
            result.metadata["timings"] = {
                "load_s": round(load_s, 3),
                "inference_s": round(inference_s, 3),
                "write_s": round(time.perf_counter() - writing_started, 3),
            }
            outcomes[job.index] = result
        return outcomes

    def predict(self, sequences: Sequence[str], *, params: dict[str, Any]) -> list[Prediction]:
        """Fold `sequences` in one forward pass and return each chain's exact numbers, without
        files or progress: what batching is checked and benchmarked against."""
        jobs = [
            _BatchJob(
                index=index,
                item=BatchItem(
                    inputs=JobInputs(sequence=sequence, name="", params=params),
                    workdir=Path(),
                    progress=_ignore_progress,
                ),
                sequence=_validate_sequence(sequence),
                params=_read_params(params),
                progress=_JobProgress(_ignore_progress),
            )
            for index, sequence in enumerate(sequences)
        ]
        with self._lock:
            model = self._ensure_loaded()
            output = self._fold(model=model, jobs=jobs)
        return [
            _chain_prediction(output=output, row=row, length=len(job.sequence), model=model)
            for row, job in enumerate(jobs)
        ]

    def _write_outputs(
        self, *, job: _BatchJob, output: dict[str, torch.Tensor], row: int
    ) -> RunResult:
        sequence = job.sequence
        length = len(sequence)
        prediction = _chain_prediction(output=output, row=row, length=length, model=self.model)
        crop, ptm = prediction.pdb_inputs, prediction.ptm
        pae = prediction.pae
        pdb_name = f"{_file_stem(job.item.inputs.name)}.pdb"
        workdir = job.item.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        exact_plddt = prediction.plddt
        plddt = [round(value, 2) for value in exact_plddt]
        mean_plddt = round(sum(exact_plddt) / len(exact_plddt), 2)
        summary: dict[str, Any] = {
            "mean_plddt": mean_plddt,
            "ptm": round(ptm, 4),
            "max_pae": round(float(output["max_predicted_aligned_error"]), 2),
            # ESMFold is deterministic: one sample per job, kept for the multi-sample models.
            "samples": [
                {"index": 0, "file": pdb_name, "mean_plddt": mean_plddt, "ptm": round(ptm, 4)}
            ],
            "best_sample": 0,
        }
        pdb_path = workdir / pdb_name
        pdb_path.write_text(_to_pdb(output=crop, plddt=plddt))
        confidence = {
            **summary,
            "sequence": sequence,
            "plddt": plddt,
            "pae": [[round(value, 2) for value in pae_row] for pae_row in pae.tolist()],
        }
        confidence_file = confidence_write(workdir, confidence)
        params = job.params
        return RunResult(
            files=[
                OutputFile(
                    name=pdb_name, path=pdb_path, content_type="chemical/x-pdb", role="structure"
                ),
                confidence_file,
            ],
            primary_file=pdb_name,
            summary=summary,
            metadata={
                "model_id": self.model_id,
                "weights": self.weights,
                "untrained": self._untrained,
                "device": self.device,
                "sequence_length": length,
                "params": {"chunk_size": params.chunk_size, "num_recycles": params.num_recycles},
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            },
        )

    def _ensure_loaded(self) -> EsmForProteinFolding:
        if self._model is not None:
            return self._model
        started = time.perf_counter()
        model = self._load_model()
        # Half-precision language model on GPU as in the transformers ESMFold docs (cast before
        # the move, so the GPU never holds it in fp32); CPUs run it in fp32. The folding trunk
        # stays fp32 (TF32 matmuls on GPU).
        on_gpu = self.device.startswith("cuda")
        # transformers' @wraps(nn.Module.to) hides the bound method's signature from mypy.
        if on_gpu:
            model.esm = model.esm.to(self.gpu_lm_dtype)  # type: ignore[arg-type]
        else:
            model.esm = model.esm.float()
        model.to(self.device)  # type: ignore[arg-type]
        if on_gpu:
            torch.backends.cuda.matmul.allow_tf32 = True
        model.eval()
        self._untrained = bool(getattr(model.config, UNTRAINED_CONFIG_KEY, False))
        self._model = model
        logger.info(
            "loaded ESMFold weights %s on %s in %.1f s%s",
            self.weights,
            self.device,
            time.perf_counter() - started,
            " (untrained checkpoint)" if self._untrained else "",
        )
        return model

    def _load_model(self) -> EsmForProteinFolding:
        looks_like_path = self.weights.startswith(("/", ".", "~"))
        if looks_like_path and not Path(self.weights).expanduser().is_dir():
            raise RunnerError(
                f"ESMFold weights directory {self.weights!r} does not exist; "
                f"set {WEIGHTS_SETTING} to a directory holding an ESMFold checkpoint"
            )
        source = str(Path(self.weights).expanduser()) if looks_like_path else self.weights
        try:
            # Always the folding class: AutoModel would load a bare EsmModel and drop the trunk.
            # fp32 explicitly: dtype "auto" could take fp16 from the stored language model and
            # put the whole trunk in fp16.
            loaded = EsmForProteinFolding.from_pretrained(
                source,
                dtype=torch.float32,
                local_files_only=self.local_files_only,
                output_loading_info=True,
            )
        # Loading fails in many library-specific ways; all mean the configured weights are unusable.
        except Exception as exc:
            raise RunnerError(
                f"could not load ESMFold weights from {self.weights!r} ({exc}); "
                f"set {WEIGHTS_SETTING} to an ESMFold checkpoint directory or model hub id"
            ) from exc
        # With output_loading_info, from_pretrained returns (model, info) despite its annotation.
        model, loading_info = cast(tuple[EsmForProteinFolding, dict[str, Any]], loaded)
        # transformers fills missing weights with random values and only logs a warning.
        parameter_names = {name for name, _ in model.named_parameters()}
        missing = sorted(set(loading_info["missing_keys"]) & parameter_names)
        if missing:
            raise RunnerError(
                f"ESMFold weights in {self.weights!r} lack {len(missing)} parameters "
                f"(first: {missing[0]}); set {WEIGHTS_SETTING} to a complete ESMFold checkpoint"
            )
        return model

    def _fold(
        self, *, model: EsmForProteinFolding, jobs: list[_BatchJob]
    ) -> dict[str, torch.Tensor]:
        device = torch.device(self.device)
        params = jobs[0].params
        length = max(len(job.sequence) for job in jobs)
        # Shorter chains are padded at the end and masked out: the language model, the trunk's
        # attention and triangle updates and the structure module's IPA all take the mask.
        aatype = torch.zeros((len(jobs), length), dtype=torch.long)
        mask = torch.zeros_like(aatype)
        for row, job in enumerate(jobs):
            # The same residue mapping as `EsmForProteinFolding.infer` (which cannot take
            # num_recycles).
            aatype[row, : len(job.sequence)] = torch.tensor(
                [ALPHABET.index(residue) for residue in job.sequence]
            )
            mask[row, : len(job.sequence)] = 1
        model.trunk.set_chunk_size(params.chunk_size)
        trunk_passes = (
            int(model.trunk.config.max_recycles)
            if params.num_recycles is None
            else params.num_recycles + 1
        )
        passes_done = 0

        def report_pass(*_: object) -> None:
            nonlocal passes_done
            passes_done += 1
            for job in jobs:
                job.progress("inference", min(passes_done / trunk_passes, 1.0))
            if all(job.progress.error is not None for job in jobs):
                raise _EveryJobStopped

        # The structure module runs once at the end of every trunk pass.
        hook = model.trunk.structure_module.register_forward_hook(report_pass)
        try:
            with torch.no_grad():
                output = model(
                    aatype.to(device),
                    attention_mask=mask.to(device),
                    position_ids=torch.arange(length, device=device).expand(len(jobs), -1),
                    num_recycles=params.num_recycles,
                )
        finally:
            hook.remove()
        return dict(output)


def _fold_error(job: _BatchJob, error: Exception) -> Exception:
    """What a lone job's failed forward pass reports: out of memory is the tenant's to fix."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return RunnerError(
            f"a {len(job.sequence)}-residue chain does not fit in GPU memory at "
            f"chunk_size={job.params.chunk_size}; try a smaller chunk_size"
        )
    return error


def _validate_sequence(sequence: str) -> str:
    return sequence_validate(
        sequence, alphabet=ALPHABET, takes=f"ESMFold takes one chain of the residues {ALPHABET}"
    )


def _read_params(params: dict[str, Any]) -> EsmFoldParams:
    """The job's params as the runner uses them. Their rules (names, ranges, defaults) are the
    registry's alone: a job's params were checked and filled in at submission, and a direct
    call (a bench, a test) gets the registry's defaults here."""
    filled = MODELS["esmfold"].params_with_defaults(params)
    return EsmFoldParams(chunk_size=filled["chunk_size"], num_recycles=filled["num_recycles"])


def _file_stem(name: str) -> str:
    # Job names are user text; keep file names safe to join onto workdir and to serve.
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:64]
    return stem or "prediction"


def _per_residue_plddt(output: dict[str, torch.Tensor]) -> list[float]:
    # ESMFold predicts pLDDT per atom on a 0-1 scale; per residue we report the CA atom's, x100,
    # the quantity AlphaFold2 reports as pLDDT.
    plddt_ca = output["plddt"][0, :, _CA_ATOM_INDEX].float().cpu() * 100
    values: list[float] = plddt_ca.tolist()
    return values


def _to_pdb(*, output: dict[str, torch.Tensor], plddt: list[float]) -> str:
    # Every atom of a residue carries that residue's pLDDT, as in AlphaFold2's PDB files.
    pdb_inputs = {key: output[key] for key in _PDB_OUTPUT_KEYS}
    atoms_per_residue = output["atom37_atom_exists"].shape[-1]
    pdb_inputs["plddt"] = torch.tensor(plddt).unsqueeze(-1).expand(-1, atoms_per_residue)[None]
    pdb: str = EsmForProteinFolding.output_to_pdb(pdb_inputs)[0]
    return pdb
