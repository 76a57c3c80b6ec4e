"""Bounds, retention, logs and metrics, event streams, the API hot path."""

from phonos.env import (
    ImproperlyConfiguredEnv,
    env_int,
    env_str,
)
from phonos.settings.dashboard import *  # noqa: F403

# --- Bounds and retention (docs/operations.md) ---------------------------------------------------
# A docking ligand: its SMILES length is checked before RDKit parses it, then its heavy atoms.
PHONOS_MAX_LIGAND_SMILES_CHARS = env_int("PHONOS_MAX_LIGAND_SMILES_CHARS", 1000, minimum=1)
PHONOS_MAX_LIGAND_HEAVY_ATOMS = env_int("PHONOS_MAX_LIGAND_HEAVY_ATOMS", 150, minimum=1)
# How long rows are kept before the `retention-prune` beat task (and `phonos_prune`) delete them;
# webhook deliveries keep PHONOS_WEBHOOK_DELIVERY_RETENTION_DAYS, idempotency records 24 h.
PHONOS_RETENTION_JOB_EVENTS_DAYS = env_int("PHONOS_RETENTION_JOB_EVENTS_DAYS", 30, minimum=1)
# The usage endpoint answers at most 90 days, so 90 is the least that keeps it whole.
PHONOS_RETENTION_USAGE_DAYS = env_int("PHONOS_RETENTION_USAGE_DAYS", 90, minimum=90)
PHONOS_RETENTION_BATCH_SIZE = env_int("PHONOS_RETENTION_BATCH_SIZE", 1000, minimum=1)
PHONOS_RETENTION_INTERVAL_SECONDS = env_int("PHONOS_RETENTION_INTERVAL_SECONDS", 3600, minimum=1)
CELERY_BEAT_SCHEDULE["retention-prune"] = {
    "task": "apps.ops.tasks.retention_prune",
    "schedule": float(PHONOS_RETENTION_INTERVAL_SECONDS),
    "options": {"queue": "light", "expires": PHONOS_RETENTION_INTERVAL_SECONDS},
}

# --- Operations: logs and metrics (docs/operations.md) ------------------------------------------
# Every log line carries the request id (and, in a worker, the job id); `json` writes one JSON
# object a line for a log pipeline, `text` is for people reading a terminal.
PHONOS_LOG_FORMAT = env_str("PHONOS_LOG_FORMAT", "json" if IS_PRODUCTION else "text")
if PHONOS_LOG_FORMAT not in {"json", "text"}:
    raise ImproperlyConfiguredEnv(
        f"PHONOS_LOG_FORMAT must be json or text, got {PHONOS_LOG_FORMAT!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"log_context": {"()": "apps.ops.logs.LogContextFilter"}},
    "formatters": {
        "json": {"()": "apps.ops.logs.PhonosJsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["log_context"],
            "formatter": PHONOS_LOG_FORMAT,
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}
# GET /metrics answers only to `Authorization: Bearer <this>`; empty turns the endpoint off (404).
PHONOS_METRICS_TOKEN = env_str("PHONOS_METRICS_TOKEN")

# --- Event streams (docs/serving.md) -----------------------------------------------------------
# Open /v1/jobs/{id}/events (and dashboard) streams one account may hold; 429 beyond.
PHONOS_MAX_STREAMS_PER_ACCOUNT = env_int("PHONOS_MAX_STREAMS_PER_ACCOUNT", 20, minimum=1)
# A stream ends after this long with a `timeout` event; the client reconnects with Last-Event-ID.
PHONOS_STREAM_MAX_SECONDS = env_int("PHONOS_STREAM_MAX_SECONDS", 3600, minimum=1)

# --- API hot path (docs/benchmarks.md, docs/api.md) ----------------------------------------------
# Usage counters wait in each API process at most this long before reaching Redis (they usually
# ride along with the next request's rate-limit round trip sooner); a killed process loses them.
PHONOS_USAGE_FLUSH_SECONDS = env_int("PHONOS_USAGE_FLUSH_SECONDS", 1, minimum=1)
# The beat task that folds Redis's usage counters into PostgreSQL runs this often; with the
# flush above it bounds how late a request shows in GET /v1/usage (documented: 60 s at most).
PHONOS_USAGE_FOLD_SECONDS = env_int("PHONOS_USAGE_FOLD_SECONDS", 30, minimum=1)
if PHONOS_USAGE_FLUSH_SECONDS + PHONOS_USAGE_FOLD_SECONDS > 60:
    raise ImproperlyConfiguredEnv(
        "PHONOS_USAGE_FLUSH_SECONDS + PHONOS_USAGE_FOLD_SECONDS must be at most 60 (the usage lag)"
    )
CELERY_BEAT_SCHEDULE["usage-fold"] = {
    "task": "apps.usage.tasks.usage_fold",
    "schedule": float(PHONOS_USAGE_FOLD_SECONDS),
    "options": {"queue": "light", "expires": PHONOS_USAGE_FOLD_SECONDS},
}
# An API process reuses a key's lookup for at most this long. A revocation reaches every
# process at its next request through Redis (apps.accounts.key_cache); without Redis, or while
# it is down, this is how long a revoked key may still work (at most 5 s, docs/api.md).
PHONOS_API_KEY_CACHE_SECONDS = env_int("PHONOS_API_KEY_CACHE_SECONDS", 5, minimum=0)
if PHONOS_API_KEY_CACHE_SECONDS > 5:
    raise ImproperlyConfiguredEnv("PHONOS_API_KEY_CACHE_SECONDS must be at most 5")
# GET /v1/jobs/{id} answers from a snapshot in Redis (apps.jobs.snapshots) that every write to
# the job marks stale when it commits; this bounds how long one outlives a writer that died
# between its commit and that mark. 0: no snapshots, every GET reads PostgreSQL.
PHONOS_JOB_SNAPSHOT_SECONDS = env_int("PHONOS_JOB_SNAPSHOT_SECONDS", 30, minimum=0)
