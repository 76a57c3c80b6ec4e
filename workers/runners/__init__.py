"""Model runner registry.

Runner modules are imported on first use so that importing this package never imports torch.
`get_runner` builds a new, unloaded runner: a worker process builds each runner once and keeps
it, so the model stays resident between jobs.
"""

from __future__ import annotations

import importlib
from typing import Any

from workers.runners.base import (
    JobInputs,
    OutputFile,
    ProgressCallback,
    ProgressStage,
    Runner,
    RunnerError,
    RunResult,
)

__all__ = [
    "MODEL_IDS",
    "JobInputs",
    "OutputFile",
    "ProgressCallback",
    "ProgressStage",
    "Runner",
    "RunnerError",
    "RunResult",
    "get_runner",
]

# model id -> (module, class); the class takes keyword-only constructor options.
_RUNNER_CLASSES: dict[str, tuple[str, str]] = {
    "esmfold": ("workers.runners.esmfold", "EsmFoldRunner"),
    "alphafold2": ("workers.runners.alphafold2", "AlphaFold2Runner"),
    "vina": ("workers.runners.vina", "VinaRunner"),
    "diffdock": ("workers.runners.diffdock", "DiffDockRunner"),
}
MODEL_IDS: tuple[str, ...] = tuple(_RUNNER_CLASSES)


def get_runner(model_id: str, **options: Any) -> Runner:
    """Build the runner for `model_id`; `options` go to its constructor (e.g. `weights=`)."""
    try:
        module_name, class_name = _RUNNER_CLASSES[model_id]
    except KeyError:
        known = ", ".join(MODEL_IDS)
        raise RunnerError(f"unknown model {model_id!r}; known models: {known}") from None
    runner_class = getattr(importlib.import_module(module_name), class_name)
    runner: Runner = runner_class(**options)
    return runner
