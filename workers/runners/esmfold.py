"""ESMFold through transformers' `EsmForProteinFolding`: one chain in, a PDB and confidences out."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import transformers
from transformers import EsmForProteinFolding
from transformers.models.esm.openfold_utils import residue_constants

from apps.jobs.registry import MODELS
from workers.runners.base import (
    JobInputs,
    OutputFile,
    ProgressCallback,
    RunnerError,
    RunResult,
)

logger = logging.getLogger(__name__)

WEIGHTS_SETTING = "PHONOS_ESMFOLD_WEIGHTS"
DEFAULT_WEIGHTS = "facebook/esmfold_v1"
# AlphaFold2 residue order, as `EsmForProteinFolding.forward` expects its input ids.
ALPHABET = "".join(residue_constants.restypes_with_x)
# config.json key that marks a checkpoint as random weights (see workers.checkpoints).
UNTRAINED_CONFIG_KEY = "phonos_untrained"
CONFIDENCE_FILE = "confidence.json"

_CA_ATOM_INDEX = residue_constants.atom_order["CA"]
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


class EsmFoldRunner:
    model_id = "esmfold"

    def __init__(
        self,
        *,
        weights: str = DEFAULT_WEIGHTS,
        device: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        self.weights = weights
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.local_files_only = local_files_only
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
        # Validate before loading so that bad input fails fast, even on a cold worker.
        sequence = _validate_sequence(inputs.sequence)
        params = _read_params(inputs.params)
        pdb_name = f"{_file_stem(inputs.name)}.pdb"

        with self._lock:
            load_started = time.perf_counter()
            if self._model is None:
                progress("loading_model", None)
            model = self._ensure_loaded()
            load_s = time.perf_counter() - load_started

            inference_started = time.perf_counter()
            progress("inference", 0.0)
            output = self._fold(model=model, sequence=sequence, params=params, progress=progress)
            inference_s = time.perf_counter() - inference_started

        writing_started = time.perf_counter()
        progress("writing_outputs", None)
        workdir.mkdir(parents=True, exist_ok=True)
        exact_plddt = _per_residue_plddt(output)
        plddt = [round(value, 2) for value in exact_plddt]
        mean_plddt = round(sum(exact_plddt) / len(exact_plddt), 2)
        ptm = float(output["ptm"])
        pae = output["predicted_aligned_error"][0].float().cpu()
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
        pdb_path.write_text(_to_pdb(output=output, plddt=plddt))
        confidence_path = workdir / CONFIDENCE_FILE
        confidence = {
            **summary,
            "sequence": sequence,
            "plddt": plddt,
            "pae": [[round(value, 2) for value in row] for row in pae.tolist()],
        }
        confidence_path.write_text(json.dumps(confidence))
        write_s = time.perf_counter() - writing_started

        return RunResult(
            files=[
                OutputFile(
                    name=pdb_name, path=pdb_path, content_type="chemical/x-pdb", role="structure"
                ),
                OutputFile(
                    name=CONFIDENCE_FILE,
                    path=confidence_path,
                    content_type="application/json",
                    role="confidence",
                ),
            ],
            primary_file=pdb_name,
            summary=summary,
            metadata={
                "model_id": self.model_id,
                "weights": self.weights,
                "untrained": self._untrained,
                "device": self.device,
                "sequence_length": len(sequence),
                "params": {"chunk_size": params.chunk_size, "num_recycles": params.num_recycles},
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "timings": {
                    "load_s": round(load_s, 3),
                    "inference_s": round(inference_s, 3),
                    "write_s": round(write_s, 3),
                },
            },
        )

    def _ensure_loaded(self) -> EsmForProteinFolding:
        if self._model is not None:
            return self._model
        started = time.perf_counter()
        model = self._load_model()
        # fp16 language model on GPU as in the transformers ESMFold docs (halved before the move,
        # so the GPU never holds it in fp32); CPUs run it in fp32.
        on_gpu = self.device.startswith("cuda")
        model.esm = model.esm.half() if on_gpu else model.esm.float()
        # transformers' @wraps(nn.Module.to) hides the bound method's signature from mypy.
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
        self,
        *,
        model: EsmForProteinFolding,
        sequence: str,
        params: EsmFoldParams,
        progress: ProgressCallback,
    ) -> dict[str, torch.Tensor]:
        device = torch.device(self.device)
        # The same residue mapping as `EsmForProteinFolding.infer`, which cannot take num_recycles.
        aatype = torch.tensor([[ALPHABET.index(residue) for residue in sequence]], device=device)
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
            progress("inference", min(passes_done / trunk_passes, 1.0))

        # The structure module runs once at the end of every trunk pass.
        hook = model.trunk.structure_module.register_forward_hook(report_pass)
        try:
            with torch.no_grad():
                output = model(
                    aatype,
                    attention_mask=torch.ones_like(aatype),
                    position_ids=torch.arange(len(sequence), device=device).unsqueeze(0),
                    num_recycles=params.num_recycles,
                )
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise RunnerError(
                f"a {len(sequence)}-residue chain does not fit in GPU memory at "
                f"chunk_size={params.chunk_size}; try a smaller chunk_size"
            ) from exc
        finally:
            hook.remove()
        return dict(output)


def _validate_sequence(sequence: str) -> str:
    sequence = sequence.strip().upper()
    if not sequence:
        raise RunnerError("the sequence is empty")
    invalid = sorted(set(sequence) - set(ALPHABET))
    if invalid:
        raise RunnerError(
            f"the sequence contains unsupported characters {''.join(invalid)!r}; "
            f"ESMFold takes one chain of the residues {ALPHABET}"
        )
    return sequence


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
