from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import worker_environment
from tests.hostile.supervisor import SupervisedWorker


@pytest.fixture
def supervised_worker(
    tmp_path: Path, transactional_db
) -> Iterator[Callable[..., SupervisedWorker]]:
    """Start a worker that is restarted after every death; all are stopped at the end."""
    workers: list[SupervisedWorker] = []

    def start(*, name: str, queues: str, cpu_seconds: int | None = None, **env: str):
        worker = SupervisedWorker(
            name=name,
            queues=queues,
            # One compute thread: CPU-time figures stay those of the job, not of idle spinning.
            env=worker_environment(OMP_NUM_THREADS="1", **env),
            log_dir=tmp_path,
            cpu_seconds=cpu_seconds,
        )
        workers.append(worker.start())
        return worker

    yield start
    for worker in workers:
        worker.stop()
