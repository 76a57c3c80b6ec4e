"""A Celery worker kept running the way systemd or Kubernetes would: restarted whenever it exits."""

import os
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path

from bench.processes import celery_worker_command


class SupervisedWorker:
    """`celery worker` on `queues`, restarted after every exit. `cpu_seconds` caps each process's
    CPU time (RLIMIT_CPU, as `ulimit -t` or a container CPU-time quota would): the kernel then
    SIGKILLs any process of the worker that computes for longer. `exit_codes` lists how each
    worker that ended did."""

    def __init__(
        self,
        *,
        name: str,
        queues: str,
        env: dict[str, str],
        log_dir: Path,
        cpu_seconds: int | None = None,
        pool: str = "prefork",
        concurrency: int = 1,
    ) -> None:
        self.name = name
        self.pool = pool
        self.concurrency = concurrency
        self.exit_codes: list[int] = []
        self.queues = queues
        self.env = env
        self.log_dir = log_dir
        self.cpu_seconds = cpu_seconds
        self.starts = 0
        self.process: subprocess.Popen | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def _limit(self) -> None:
        if self.cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds))

    def _spawn(self) -> None:
        log_path = self.log_dir / f"{self.name}-{self.starts}.log"
        self.starts += 1
        self.process = subprocess.Popen(
            celery_worker_command(
                self.queues,
                name=f"{self.name}-{os.getpid()}@%h",
                pool=self.pool,
                concurrency=self.concurrency,
            ),
            env=self.env,
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._limit,
        )

    def _supervise(self) -> None:
        while not self._stopped.wait(0.5):
            with self._lock:
                if self.process is not None and self.process.poll() is not None:
                    self.exit_codes.append(self.process.returncode)
                    self._spawn()

    def start(self) -> "SupervisedWorker":
        with self._lock:
            self._spawn()
        self._thread.start()
        return self

    def log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted(self.log_dir.glob(f"{self.name}-*.log"))
        )

    def wait_for_log(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared in the worker log:\n{self.log()}")
            time.sleep(0.2)

    def kill_hard(self) -> None:
        """SIGKILL the whole worker (main and pool processes), as a lost node would."""
        with self._lock:
            self._stopped.set()
            if self.process is not None and self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
