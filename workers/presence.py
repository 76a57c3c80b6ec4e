"""This worker's presence heartbeat: which queues it consumes and which models it holds ready.

It is written by the process that holds the models (the prefork pool process, where model
queues run `--concurrency 1`, or the ESMFold threads-pool worker's own process), so a model is
reported ready only once that process really loaded it, and a process that dies stops
refreshing it. The key and JSON layout are in docs/workers.md; the
reader is apps.jobs.availability.
"""

import logging
import os
import threading
from typing import Any

from django.conf import settings

from apps.jobs.availability import build_info, iso_now, presence_delete, presence_write

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_identity: dict[str, Any] = {"hostname": f"worker@{os.uname().nodename}", "started_at": iso_now()}
_queues: list[str] = []
_models: dict[str, dict[str, Any]] = {}
_writer: "PresenceWriter | None" = None


def worker_identity_set(*, hostname: str) -> None:
    """Called in the worker's main process before it forks its pool (celeryd_init)."""
    _identity.update(hostname=hostname, started_at=iso_now())


def model_state_set(
    model_id: str,
    *,
    ready: bool,
    device: str | None = None,
    memory_bytes: int | None = None,
    weights: str | None = None,
    error: str | None = None,
) -> None:
    with _lock:
        _models[model_id] = {
            "ready": ready,
            "device": device,
            "memory_bytes": memory_bytes,
            "weights": weights,
            "error": error,
        }
    if _writer is not None:
        _writer.wake.set()  # say "ready" (or why not) now, not at the next beat


def presence_payload() -> dict[str, Any]:
    with _lock:
        models = {model_id: dict(state) for model_id, state in _models.items()}
    return {
        "hostname": _identity["hostname"],
        "pid": os.getpid(),
        "queues": list(_queues),
        "version": build_info()["version"],
        "started_at": _identity["started_at"],
        "seen_at": iso_now(),
        "models": models,
    }


class PresenceWriter(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True, name="worker-presence")
        self.stopped = threading.Event()
        self.wake = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.wake.clear()
            try:
                presence_write(hostname=_identity["hostname"], presence=presence_payload())
            except Exception as error:
                # The broker may be down for a while; the next beat tries again.
                logger.warning("Could not write worker presence: %s", error)
            self.wake.wait(settings.PHONOS_WORKER_PRESENCE_INTERVAL_SECONDS)


def presence_start(*, queues: list[str], models: list[str]) -> None:
    """Announce this process: its models start as loading (not ready, no error)."""
    global _writer
    _queues[:] = sorted(queues)
    for model_id in models:
        model_state_set(model_id, ready=False)
    _writer = PresenceWriter()
    _writer.start()


def presence_stop() -> None:
    """A clean shutdown withdraws the presence at once instead of waiting for the TTL."""
    if _writer is None:
        return
    _writer.stopped.set()
    _writer.wake.set()
    _writer.join(timeout=5)
    try:
        presence_delete(hostname=_identity["hostname"])
    except Exception as error:
        logger.warning("Could not withdraw worker presence: %s", error)
