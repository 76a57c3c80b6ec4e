"""Which models a live worker can serve right now, from the workers' presence heartbeats.

Every Celery worker rewrites `phonos:worker:<hostname>` (JSON, see docs/workers.md) every
PHONOS_WORKER_PRESENCE_INTERVAL_SECONDS with a TTL of PHONOS_WORKER_PRESENCE_TTL_SECONDS, so a
worker that dies drops out within the TTL. A model is available when at least one live worker
reports it ready. The embedded default has no Redis: there each worker writes the same JSON to
a file under `var/workers/`, and a file older than the TTL counts as gone.
"""

import functools
import importlib.metadata
import json
import logging
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps.common.exceptions import ServiceUnavailable
from apps.jobs.registry import MODELS

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

PRESENCE_PREFIX = "phonos:worker:"

_cache_lock = threading.Lock()
_cache: tuple[float, list[dict[str, Any]]] | None = None


def _redis() -> "redis.Redis":
    import redis

    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2, decode_responses=True
    )


def _presence_dir() -> Path:
    return Path(settings.VAR_DIR) / "workers"


def presence_write(*, hostname: str, presence: dict[str, Any]) -> None:
    """Called by workers (workers.presence); raises on a broker that cannot be reached."""
    ttl = settings.PHONOS_WORKER_PRESENCE_TTL_SECONDS
    payload = json.dumps(presence)
    if settings.REDIS_URL:
        _redis().set(PRESENCE_PREFIX + hostname, payload, ex=ttl)
        return
    directory = _presence_dir()
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{hostname}.tmp"
    temporary.write_text(payload)
    temporary.replace(directory / f"{hostname}.json")


def presence_delete(*, hostname: str) -> None:
    if settings.REDIS_URL:
        _redis().delete(PRESENCE_PREFIX + hostname)
    else:
        (_presence_dir() / f"{hostname}.json").unlink(missing_ok=True)


def _read_all() -> list[dict[str, Any]]:
    if settings.REDIS_URL:
        client = _redis()
        keys = sorted(client.scan_iter(match=PRESENCE_PREFIX + "*", count=500))
        values = client.mget(keys) if keys else []
    else:
        oldest = time.time() - settings.PHONOS_WORKER_PRESENCE_TTL_SECONDS
        values = []
        for path in sorted(_presence_dir().glob("*.json")):
            try:
                if path.stat().st_mtime >= oldest:
                    values.append(path.read_text())
            except OSError:
                continue  # removed by its worker meanwhile
    presences = []
    for value in values:
        if value is None:
            continue  # expired between SCAN and MGET
        try:
            presence = json.loads(value)
        except ValueError:
            continue
        if isinstance(presence, dict) and isinstance(presence.get("models"), dict):
            presences.append(presence)
    return presences


def worker_presence_list() -> list[dict[str, Any]]:
    """Every live worker's presence, sorted by hostname. Cached per process for
    PHONOS_AVAILABILITY_CACHE_SECONDS, so the submission path pays at most one Redis round trip
    that often. An unreachable broker reads as no workers."""
    global _cache
    now = time.monotonic()
    with _cache_lock:
        if _cache is not None and now - _cache[0] < settings.PHONOS_AVAILABILITY_CACHE_SECONDS:
            return _cache[1]
    try:
        presences = _read_all()
    except Exception as error:
        logger.warning("Could not read worker presence: %s", error)
        presences = []
    with _cache_lock:
        _cache = (now, presences)
    return presences


def presence_cache_clear() -> None:
    global _cache
    with _cache_lock:
        _cache = None


def model_availability() -> dict[str, bool]:
    """Every model of the catalog: True when at least one live worker reports it ready."""
    ready = {
        model_id
        for presence in worker_presence_list()
        for model_id, state in presence["models"].items()
        if isinstance(state, dict) and state.get("ready") is True
    }
    return {model_id: model_id in ready for model_id in MODELS}


def _models_missing(model_ids: set[str]) -> list[str]:
    if not settings.PHONOS_REQUIRE_AVAILABLE_WORKER:
        return []
    availability = model_availability()
    return sorted(model_id for model_id in model_ids if not availability.get(model_id, False))


def models_available(model_ids: set[str]) -> bool:
    """Whether a live worker serves each of `model_ids` (always, with
    PHONOS_REQUIRE_AVAILABLE_WORKER off)."""
    return not _models_missing(model_ids)


def models_available_require(model_ids: set[str]) -> None:
    """503 before anything is charged when no live worker serves one of `model_ids`
    (PHONOS_REQUIRE_AVAILABLE_WORKER turns the check off)."""
    missing = _models_missing(model_ids)
    if missing:
        raise ServiceUnavailable(
            f"No worker serving {', '.join(missing)} is running right now; nothing was charged. "
            "Please retry later.",
            error="Model unavailable",
            retry_after=settings.PHONOS_WORKER_PRESENCE_TTL_SECONDS,
        )


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


@functools.cache
def build_info() -> dict[str, str]:
    """The package version and the build's git sha: PHONOS_BUILD_SHA (set by image builds),
    else `git rev-parse HEAD` of a checkout, read once per process, else "unknown"."""
    try:
        version = importlib.metadata.version("phonos")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    sha = settings.PHONOS_BUILD_SHA
    if not sha:
        try:
            sha = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=settings.BASE_DIR,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            sha = ""
    return {"version": version, "build": sha or "unknown"}


def _queue_depths(queues: list[str]) -> dict[str, int | None]:
    """LLEN of each Celery queue; None where the broker is not Redis (the embedded default)."""
    if not settings.REDIS_URL:
        return dict.fromkeys(queues)
    client = _redis()
    with client.pipeline() as pipe:
        for queue in queues:
            pipe.llen(queue)
        return dict(zip(queues, pipe.execute(), strict=True))


def system_status() -> dict[str, Any]:
    """What an operator needs at a glance: workers and their models, queues, builds, and
    whether the broker and the database answer. Read live, not from the submission cache."""
    from django.db import connection
    from django.db.models import Count, Min
    from django.utils import timezone

    from apps.common.queues import Queue
    from apps.jobs.models import Job

    queues = [*dict.fromkeys(spec.queue for spec in MODELS.values()), Queue.LIGHT.value]
    broker: dict[str, bool | str | None] = {"reachable": True, "error": None}
    try:
        presences = _read_all()
        depths = _queue_depths(queues)
    except Exception as error:
        broker = {"reachable": False, "error": type(error).__name__}
        presences, depths = [], dict.fromkeys(queues)
    database: dict[str, bool | str | None] = {"reachable": True, "error": None}
    pending: dict[str, dict[str, Any]] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        rows = (
            Job.objects.filter(status=Job.Status.PENDING)
            .values("model")
            .annotate(count=Count("id"), oldest=Min("created_at"))
        )
        now = timezone.now()
        pending = {
            row["model"]: {
                "pending": row["count"],
                "oldest_pending_age_seconds": round((now - row["oldest"]).total_seconds(), 1),
            }
            for row in rows
        }
    except Exception as error:
        database = {"reachable": False, "error": type(error).__name__}
    ready = {
        model_id
        for presence in presences
        for model_id, state in presence["models"].items()
        if isinstance(state, dict) and state.get("ready") is True
    }
    return {
        **build_info(),
        "broker": broker,
        "database": database,
        "workers": presences,
        "queues": {
            queue: {
                "depth": depths[queue],
                "workers": [p["hostname"] for p in presences if queue in p.get("queues", [])],
            }
            for queue in queues
        },
        "models": {
            spec.id: {
                "available": spec.id in ready,
                "queue": spec.queue,
                **pending.get(spec.id, {"pending": 0, "oldest_pending_age_seconds": None}),
            }
            for spec in MODELS.values()
        },
    }
