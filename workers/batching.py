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

Celery enforces no time limit in a threads pool, so the batcher keeps its own hard limit: a
watchdog thread that finds a forward pass still running `PHONOS_HARD_LIMIT_GRACE_SECONDS` past
a job's time limit (a pass that hangs reports no progress, so no soft limit stops it) fails the
pass's overdue jobs through their own tasks, as the soft limit would (one refund each), and
then ends the process (`WATCHDOG_EXIT_CODE`) after putting the messages it still holds back on
the queue: a stuck pass cannot be interrupted, and only a fresh process gets a clean GPU
context. The container's supervisor starts the next worker; a redelivered message of a failed
job finds it terminal and is dropped.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from celery.signals import task_postrun, task_prerun, worker_ready
from django.conf import settings

from workers.runners import JobInputs, ProgressCallback, ProgressStage, Runner, RunResult

if TYPE_CHECKING:
    from workers.runners.esmfold import EsmFoldRunner

logger = logging.getLogger(__name__)

RUN_JOB_TASK = "workers.tasks.run_job"

# The exit status of a worker process whose forward pass the watchdog gave up on (EX_SOFTWARE):
# not 0, so that a supervisor restarting only failed containers restarts it too.
WATCHDOG_EXIT_CODE = 70
# How long the watchdog lets the tasks of the jobs it failed record that (job_fail, refund,
# webhook) before it ends the process anyway.
WATCHDOG_SETTLE_SECONDS = 30

_tasks_in_flight = 0
_in_flight_lock = threading.Lock()
# The job request a pool thread is waiting on, so that its task's end can be told to the
# watchdog (task_postrun runs in the thread that ran the task).
_thread_request = threading.local()
# The worker's consumer (worker_ready), whose unacknowledged messages go back to the queue
# before a watchdog exit.
_consumer: Any = None


@worker_ready.connect
def _remember_consumer(sender: Any = None, **_: Any) -> None:
    global _consumer
    _consumer = sender


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
        request: _Request | None = getattr(_thread_request, "request", None)
        if request is not None:
            _thread_request.request = None
            request.settled.set()


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
    # Set when the job's task has ended (it recorded the outcome: completed, failed, dropped).
    settled: threading.Event = field(default_factory=threading.Event)
    _finish_lock: threading.Lock = field(default_factory=threading.Lock)

    def finish(self, outcome: RunResult | Exception) -> bool:
        """Hand the task its outcome, once: the pass and the watchdog may race for it."""
        with self._finish_lock:
            if self.done.is_set():
                return False
            self.outcome = outcome
            self.done.set()
            return True


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
        self.grace = settings.PHONOS_HARD_LIMIT_GRACE_SECONDS
        self._pending: list[_Request] = []
        self._arrivals = threading.Condition()
        self._thread: threading.Thread | None = None
        # The jobs of the forward pass in flight, for the watchdog.
        self._in_pass: list[_Request] = []
        self._in_pass_lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    def run(self, *, inputs: JobInputs, workdir: Path, progress: ProgressCallback) -> RunResult:
        """Called from a task's thread: blocks until this job's pass is done."""
        request = _Request(
            inputs=inputs,
            workdir=workdir,
            progress=progress,
            deadline=time.monotonic() + self.time_limit,
        )
        _thread_request.request = request
        with self._arrivals:
            self._pending.append(request)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, daemon=True, name="esmfold-batcher"
                )
                self._thread.start()
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, daemon=True, name="esmfold-watchdog"
                )
                self._watchdog.start()
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
                    request.finish(error)

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
            with self._in_pass_lock:
                self._in_pass = [batch[index] for index in group]
            try:
                outcomes = self.runner.run_batch([items[index] for index in group])
            # The runner isolates each job's own failures; what escapes is the pass's, and
            # every job in it gets it (each task reports it as today).
            except Exception as error:
                logger.exception("an ESMFold forward pass of %d jobs failed", len(group))
                outcomes = [error] * len(group)
            finally:
                with self._in_pass_lock:
                    self._in_pass = []
            for index, outcome in zip(group, outcomes, strict=True):
                batch[index].finish(outcome)

    def _watch(self) -> None:
        """The hard time limit of a threads pool (see the module docstring)."""
        interval = min(1.0, self.grace / 4)
        while True:
            time.sleep(interval)
            with self._in_pass_lock:
                running = [request for request in self._in_pass if not request.done.is_set()]
            now = time.monotonic()
            if not any(now > request.deadline + self.grace for request in running):
                continue
            from celery.exceptions import SoftTimeLimitExceeded

            # The jobs past their own limit fail as the soft limit fails them; their batch
            # mates still within theirs go back to the queue with the process's messages.
            overdue = [
                request
                for request in running
                if now > request.deadline and request.finish(SoftTimeLimitExceeded())
            ]
            if not overdue:
                continue  # the pass returned just now
            # No new job may start in this process: it would claim its job and be lost with it.
            consuming_stop()
            logger.error(
                "An ESMFold forward pass of %d jobs is still running %d s past the %d s time "
                "limit and cannot be interrupted: %d jobs fail, and this worker process exits "
                "(status %d) so that a fresh one takes over",
                len(running),
                self.grace,
                self.time_limit,
                len(overdue),
                WATCHDOG_EXIT_CODE,
            )
            settle_by = time.monotonic() + WATCHDOG_SETTLE_SECONDS
            for request in overdue:
                if not request.settled.wait(max(0.0, settle_by - time.monotonic())):
                    logger.error("a timed-out ESMFold job did not record its failure in time")
            worker_exit(WATCHDOG_EXIT_CODE)


def _with_deadline(progress: ProgressCallback, deadline: float) -> ProgressCallback:
    """The pool threads do not enforce Celery's soft time limit: each job's own progress
    reports do, so a job past its limit ends alone with the usual time-limit failure."""
    from celery.exceptions import SoftTimeLimitExceeded

    def report(stage: ProgressStage, fraction: float | None) -> None:
        if time.monotonic() > deadline:
            raise SoftTimeLimitExceeded()
        progress(stage, fraction)

    return report


# Kombu's Redis transport fetches with a BRPOP of this many seconds: once consuming has stopped,
# one fetch already sent may still hand this process a message, which is then put back too.
_FETCH_IN_FLIGHT_SECONDS = 1.5


def consuming_stop() -> None:
    """Stop taking messages, through the worker's own remote control (`cancel_consumer`), which
    its consumer thread carries out: kombu's channel is not safe to touch from here."""
    consumer = _consumer
    if consumer is None:
        return
    try:
        for queue in consumer.task_consumer.queues:
            consumer.app.control.cancel_consumer(
                queue.name, destination=[consumer.hostname], reply=True, timeout=5
            )
    except Exception:
        logger.exception("could not stop this worker consuming")


def worker_exit(status: int) -> None:
    """End this worker process now, from any thread, leaving nothing half told: the messages it
    holds unacknowledged go back to the queue (as a cold shutdown puts them back; call
    `consuming_stop` first, or this process would take them again at once), its presence
    is withdrawn, and logs are flushed. `os._exit`, because a thread stuck in a forward pass
    would keep a normal exit waiting for ever."""
    from workers.presence import presence_stop

    channel = getattr(getattr(_consumer, "task_consumer", None), "channel", None)
    try:
        if channel is not None:
            time.sleep(_FETCH_IN_FLIGHT_SECONDS)
            channel.qos.restore_unacked_once()
    except Exception:
        logger.exception("could not put this worker's unacknowledged messages back")
    try:
        presence_stop()
    except Exception:
        logger.exception("could not withdraw this worker's presence")
    logger.critical("worker process %d exits with status %d", os.getpid(), status)
    for handler in [*logging.getLogger().handlers, *logging.getLogger(__name__).handlers]:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


_batchers: dict[int, EsmFoldBatcher] = {}
_batchers_lock = threading.Lock()


def _batcher_for(runner: Runner) -> EsmFoldBatcher:
    from workers.runners.esmfold import EsmFoldRunner

    assert isinstance(runner, EsmFoldRunner)
    with _batchers_lock:
        if id(runner) not in _batchers:
            _batchers[id(runner)] = EsmFoldBatcher(runner)
        return _batchers[id(runner)]
