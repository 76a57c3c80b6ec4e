"""The protocol every model runner follows: a sequence and params in, files and confidences out.

Runners know nothing of Django, storage or billing, so they can be tested, benchmarked and run
on a GPU box alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

ProgressStage = Literal["loading_model", "msa", "inference", "writing_outputs"]
# (stage, fraction of that stage done in [0, 1], or None when the runner cannot tell)
ProgressCallback = Callable[[ProgressStage, float | None], None]
OutputRole = Literal["structure", "confidence", "msa"]
# The file the confidence endpoint serves; every runner writes one.
CONFIDENCE_FILE = "confidence.json"


class RunnerError(Exception):
    """A failure whose message can be shown as is: bad input, or weights the operator must fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, kw_only=True)
class JobInputs:
    sequence: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class OutputFile:
    name: str
    path: Path
    content_type: str
    role: OutputRole


def sequence_validate(sequence: str, *, alphabet: str, takes: str) -> str:
    """The sequence stripped and upper-cased. Raises RunnerError when it is empty or holds a
    character outside `alphabet`; `takes` ends that message, saying what the model takes."""
    sequence = sequence.strip().upper()
    if not sequence:
        raise RunnerError("the sequence is empty")
    invalid = sorted(set(sequence) - set(alphabet))
    if invalid:
        raise RunnerError(
            f"the sequence contains unsupported characters {''.join(invalid)!r}; {takes}"
        )
    return sequence


def confidence_write(workdir: Path, confidence: dict[str, Any]) -> OutputFile:
    """Write a run's full confidence record into `workdir` as `CONFIDENCE_FILE`."""
    path = workdir / CONFIDENCE_FILE
    path.write_text(json.dumps(confidence))
    return OutputFile(
        name=CONFIDENCE_FILE, path=path, content_type="application/json", role="confidence"
    )


@dataclass(frozen=True, kw_only=True)
class RunResult:
    files: list[OutputFile]
    # Name of the file in `files` that the download endpoint serves.
    primary_file: str
    # JSON-able confidence summary (mean_plddt, ptm, samples, best_sample, ...).
    summary: dict[str, Any]
    # JSON-able provenance: model_id, weights, untrained, device, params, versions, timings.
    metadata: dict[str, Any]


class Runner(Protocol):
    model_id: str

    def load(self) -> None:
        """Load the model once and keep it resident; calling again does nothing."""
        ...

    def run(self, *, inputs: JobInputs, workdir: Path, progress: ProgressCallback) -> RunResult:
        """Predict for one job, writing its files into `workdir`; loads the model if needed."""
        ...
