"""ESMFold micro-batching inside one worker process, and the run metrics of every job.

Every ESMFold job still arrives as its own Celery task, claimed by its own compare-and-set
(`job_start`) in its own pool thread, acknowledged late. Instead of calling the runner, the
task hands its job to this process's batcher and waits: one batching thread collects the jobs
that the process's tasks hold at that moment, groups them (`batch_plan`: one parameter set,
similar lengths, within the token budget and padding share), runs one forward pass per group
and hands each task its own result or exception. Each task then stores its own outputs and
completes, fails or drops its own job as before. A worker killed mid-batch leaves every task of
the batch unacknowledged: each is redelivered and claimed again, so nothing rides on another
job's message. See docs/workers.md.

Jobs share forward passes only when the process runs several tasks at once:
`--pool threads --concurrency N`. With the prefork pool at concurrency 1 every pass holds one
job and the batcher adds no wait (it knows no other task could join).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from celery.signals import task_postrun, task_prerun
from django.conf import settings

from workers.runners import JobInputs, ProgressCallback, ProgressStage, Runner, RunResult

if TYPE_CHECKING:
    from workers.runners.esmfold import EsmFoldRunner

logger = logging.getLogger(__name__)

RUN_JOB_TASK = "workers.tasks.run_job"

_tasks_in_flight = 0
_in_flight_lock = threading.Lock()


@task_prerun.connect
def _count_task_in(sender: Any = None, **_: Any) -> None:
    global _tasks_in_flight
    if getattr(sender, "name", None) == RUN_JOB_TASK:
        with _in_flight_lock:
            _tasks_in_flight += 1


@task_postrun.connect
def _count_task_out(sender: Any = None, **_: Any) -> None:
    global _tasks_in_flight
    if getattr(sender, "name", None) == RUN_JOB_TASK:
        with _in_flight_lock:
            _tasks_in_flight -= 1


def tasks_in_flight() -> int:
    """Job tasks this process runs now: once they have all handed in their jobs, waiting longer
    for company is pointless."""
    with _in_flight_lock:
        return _tasks_in_flight


def model_run(
    runner: Runner,
    *,
    job_id: UUID | str,
    inputs: JobInputs,
    workdir: Path,
    progress: ProgressCallback,
) -> RunResult:
    """Run one job's model: ESMFold through this process's batcher (unless batching is off),
    any other model alone. Records the job's run metrics when the model returns."""
    from apps.jobs.services import job_run_metrics_record

    started = time.perf_counter()
    if runner.model_id == "esmfold" and settings.PHONOS_ESMFOLD_BATCH_MAX > 1:
        result = _batcher_for(runner).run(inputs=inputs, workdir=workdir, progress=progress)
    else:
        result = runner.run(inputs=inputs, workdir=workdir, progress=progress)
    job_run_metrics_record(
        job_id=job_id,
        run_seconds=time.perf_counter() - started,
        batch_size=result.metadata.get("batch", {}).get("size", 1),
    )
    return result


@dataclass(kw_only=True)
class _Request:
    inputs: JobInputs
    workdir: Path
    progress: ProgressCallback
    deadline: float
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    outcome: RunResult | Exception | None = None


class EsmFoldBatcher:
    """Collects the ESMFold jobs of this process's tasks and folds them in shared passes."""

    def __init__(self, runner: EsmFoldRunner) -> None:
        from workers.runners.esmfold import BatchLimits

        self.runner = runner
        self.limits = BatchLimits(
            max_tokens=settings.PHONOS_ESMFOLD_BATCH_TOKENS,
            max_jobs=settings.PHONOS_ESMFOLD_BATCH_MAX,
            max_padding=settings.PHONOS_ESMFOLD_BATCH_MAX_PADDING,
        )
        self.wait_seconds = settings.PHONOS_ESMFOLD_BATCH_WAIT_MS / 1000
        self.time_limit = settings.PHONOS_TIME_LIMITS["esmfold"]
        self._pending: list[_Request] = []
        self._arrivals = threading.Condition()
        self._thread: threading.Thread | None = None

    def run(self, *, inputs: JobInputs, workdir: Path, progress: ProgressCallback) -> RunResult:
        """Called from a task's thread: blocks until this job's pass is done."""
        request = _Request(
            inputs=inputs,
            workdir=workdir,
            progress=progress,
            deadline=time.monotonic() + self.time_limit,
        )
        with self._arrivals:
            self._pending.append(request)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, daemon=True, name="esmfold-batcher"
                )
                self._thread.start()
            self._arrivals.notify()
        request.done.wait()
        if isinstance(request.outcome, Exception):
            raise request.outcome
        assert request.outcome is not None
        return request.outcome

    def _loop(self) -> None:
        while True:
            with self._arrivals:
                while not self._pending:
                    self._arrivals.wait()
                window_ends = self._pending[0].arrived + self.wait_seconds
                while (
                    len(self._pending) < min(self.limits.max_jobs, tasks_in_flight())
                    and (remaining := window_ends - time.monotonic()) > 0
                ):
                    self._arrivals.wait(remaining)
                batch, self._pending = self._pending, []
            try:
                self._fold(batch)
            # A task waits for its job's outcome with no timeout: it must always get one.
            except Exception as error:
                logger.exception("ESMFold batching failed for %d jobs", len(batch))
                for request in batch:
                    if not request.done.is_set():
                        request.outcome = error
                        request.done.set()

    def _fold(self, batch: list[_Request]) -> None:
        from django.db import close_old_connections

        from workers.runners.esmfold import BatchItem, batch_plan

        # Progress reports write to PostgreSQL from this long-lived thread.
        close_old_connections()
        items = [
            BatchItem(
                inputs=request.inputs,
                workdir=request.workdir,
                progress=_with_deadline(request.progress, request.deadline),
            )
            for request in batch
        ]
        for group in batch_plan(items, self.limits):
            try:
                outcomes = self.runner.run_batch([items[index] for index in group])
            # The runner isolates each job's own failures; what escapes is the pass's, and
            # every job in it gets it (each task reports it as today).
            except Exception as error:
                logger.exception("an ESMFold forward pass of %d jobs failed", len(group))
                outcomes = [error] * len(group)
            for index, outcome in zip(group, outcomes, strict=True):
                batch[index].outcome = outcome
                batch[index].done.set()


def _with_deadline(progress: ProgressCallback, deadline: float) -> ProgressCallback:
    """The pool threads do not enforce Celery's soft time limit: each job's own progress
    reports do, so a job past its limit ends alone with the usual time-limit failure."""
    from celery.exceptions import SoftTimeLimitExceeded

    def report(stage: ProgressStage, fraction: float | None) -> None:
        if time.monotonic() > deadline:
            raise SoftTimeLimitExceeded()
        progress(stage, fraction)

    return report


_batchers: dict[int, EsmFoldBatcher] = {}
_batchers_lock = threading.Lock()


def _batcher_for(runner: Runner) -> EsmFoldBatcher:
    from workers.runners.esmfold import EsmFoldRunner

    assert isinstance(runner, EsmFoldRunner)
    with _batchers_lock:
        if id(runner) not in _batchers:
            _batchers[id(runner)] = EsmFoldBatcher(runner)
        return _batchers[id(runner)]
