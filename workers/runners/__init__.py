"""Model runners, built from the model registry (apps.jobs.registry names each runner class).

Runner modules are imported on first use so that importing this package never imports torch.
`get_runner` builds a new, unloaded runner: a worker process builds each runner once and keeps
it, so the model stays resident between jobs.
"""

from __future__ import annotations

import importlib
from typing import Any

from apps.jobs.registry import MODELS
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

# The registry names each model's runner class; its module is imported on first use.
MODEL_IDS: tuple[str, ...] = tuple(MODELS)


def get_runner(model_id: str, **options: Any) -> Runner:
    """Build the runner for `model_id`; `options` go to its constructor (e.g. `weights=`)."""
    spec = MODELS.get(model_id)
    if spec is None:
        known = ", ".join(MODEL_IDS)
        raise RunnerError(f"unknown model {model_id!r}; known models: {known}")
    module_name, class_name = spec.runner.rsplit(".", 1)
    runner_class = getattr(importlib.import_module(module_name), class_name)
    runner: Runner = runner_class(**options)
    return runner
