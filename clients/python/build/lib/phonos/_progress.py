"""The progress bar `Job.wait` shows: stage and percentage, on standard error."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


class JobProgress:
    def __init__(self, job_id: str, enabled: bool) -> None:
        self._progress = (
            Progress(
                TextColumn("[bold]{task.fields[job]}"),
                TextColumn("{task.fields[stage]:<22}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            if enabled
            else None
        )
        self._job = job_id[:8]
        self._task: Any = None

    def __enter__(self) -> JobProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("", total=1.0, job=self._job, stage="queued")
        return self

    def show(self, status: str, stage: str | None, fraction: float | None) -> None:
        if self._progress is None:
            return
        label = status if status in ("completed", "failed", "cancelled") else (stage or status)
        completed = 1.0 if status == "completed" else fraction
        if completed is None:
            self._progress.update(self._task, stage=label)
        else:
            self._progress.update(self._task, stage=label, completed=float(completed))

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
