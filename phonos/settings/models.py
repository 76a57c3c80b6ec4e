"""Workers and models: weights, time limits, attempts, presence, MSA and micro-batching."""

from apps.jobs.registry import MODELS as MODEL_REGISTRY
from phonos.env import (
    env_bool,
    env_float,
    env_int,
    env_str,
)
from phonos.settings.api import *  # noqa: F403

# --- Workers -----------------------------------------------------------------------------------
# ESMFold weights: a local directory written by save_pretrained, or a hub id.
PHONOS_ESMFOLD_WEIGHTS = env_str("PHONOS_ESMFOLD_WEIGHTS", "facebook/esmfold_v1")
# Never reach the model hub at run time unless this is on (production images bake weights in).
PHONOS_MODEL_DOWNLOADS = env_bool("PHONOS_MODEL_DOWNLOADS", False)
# DiffDock is not a package: a checkout of its repository and the Python that runs it
# (see docs/docking.md).
PHONOS_DIFFDOCK_DIR = env_str("PHONOS_DIFFDOCK_DIR")
PHONOS_DIFFDOCK_PYTHON = env_str("PHONOS_DIFFDOCK_PYTHON", "python")
PHONOS_DEVICE = env_str("PHONOS_DEVICE")  # "cuda", "cpu"; empty picks cuda when available
# AlphaFold2 (docs/alphafold2.md): a ColabFold data directory holding params/params_model_N*.npz,
# and the MMseqs2 server its MSAs come from, cached on disk by sequence.
PHONOS_COLABFOLD_DATA_DIR = env_str("PHONOS_COLABFOLD_DATA_DIR")
PHONOS_MSA_SERVER_URL = env_str("PHONOS_MSA_SERVER_URL", "https://api.colabfold.com")
PHONOS_MSA_CACHE_DIR = env_str("PHONOS_MSA_CACHE_DIR", str(VAR_DIR / "msa-cache"))
PHONOS_TIME_LIMITS = {
    spec.id: env_int(spec.time_limit_setting, spec.default_time_limit, minimum=10)
    for spec in MODEL_REGISTRY.values()
}
PHONOS_JOB_MAX_ATTEMPTS = env_int("PHONOS_JOB_MAX_ATTEMPTS", 3, minimum=1)
# Result reuse (docs/api.md, "Identical requests"): what a job served from an identical earlier
# result (or an identical run in flight) costs, and whether accounts may share results. Off by
# default: how fast an answer comes would tell one tenant what another has folded.
PHONOS_CACHE_HIT_CREDITS = env_int("PHONOS_CACHE_HIT_CREDITS", 0, minimum=0)
PHONOS_SHARED_RESULT_CACHE = env_bool("PHONOS_SHARED_RESULT_CACHE", False)
# `Prefer: wait=N` on POST /v1/predict: at most this many requests per API process hold their
# thread waiting for their job; more answer at once, as without the header.
PHONOS_PREFER_WAIT_MAX_REQUESTS = env_int("PHONOS_PREFER_WAIT_MAX_REQUESTS", 4, minimum=0)
PHONOS_HEARTBEAT_SECONDS = env_int("PHONOS_HEARTBEAT_SECONDS", 10, minimum=1)
# A running job whose heartbeat is older than this is taken to have lost its worker.
PHONOS_STALE_AFTER_SECONDS = env_int("PHONOS_STALE_AFTER_SECONDS", 60, minimum=2)
# A pending job published this long ago without starting is published again (lost message).
PHONOS_REPUBLISH_AFTER_SECONDS = env_int("PHONOS_REPUBLISH_AFTER_SECONDS", 3600, minimum=1)
PHONOS_SWEEP_INTERVAL_SECONDS = env_int("PHONOS_SWEEP_INTERVAL_SECONDS", 30, minimum=1)
# Seconds a model task may run past its soft limit before Celery kills it (the hard limit); in
# the ESMFold threads pool, before the batcher's watchdog ends the process (docs/workers.md).
PHONOS_HARD_LIMIT_GRACE_SECONDS = env_int("PHONOS_HARD_LIMIT_GRACE_SECONDS", 60, minimum=1)
# Redis hands an unacknowledged message to another worker after this long. It must outlast the
# longest hard time limit, or a long job still running would be started a second time; a worker
# that dies instead is noticed by the sweeper's heartbeat check long before (docs/workers.md).
# (Redis only: the embedded default's SQLite broker passes its options to SQLAlchemy, which
# refuses this one.)
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = (
        max(PHONOS_TIME_LIMITS.values()) + PHONOS_HARD_LIMIT_GRACE_SECONDS + 600
    )
# Refuse (503) submissions for a model no live worker reports ready. Off outside production by
# default: tests and development submit jobs without workers (docs/workers.md).
PHONOS_REQUIRE_AVAILABLE_WORKER = env_bool("PHONOS_REQUIRE_AVAILABLE_WORKER", IS_PRODUCTION)
# Worker presence (docs/workers.md): rewritten every interval, gone after the TTL.
PHONOS_WORKER_PRESENCE_TTL_SECONDS = 30
PHONOS_WORKER_PRESENCE_INTERVAL_SECONDS = 10
# How long an API process reuses what it last read of worker presence.
PHONOS_AVAILABILITY_CACHE_SECONDS = 2.0
# The MMseqs2 server AlphaFold2 jobs get their MSAs from: per-request timeouts and a deadline
# for the whole search, after which the job fails (refunded) naming the server.
PHONOS_MSA_CONNECT_TIMEOUT_SECONDS = env_int("PHONOS_MSA_CONNECT_TIMEOUT_SECONDS", 10, minimum=1)
PHONOS_MSA_READ_TIMEOUT_SECONDS = env_int("PHONOS_MSA_READ_TIMEOUT_SECONDS", 60, minimum=1)
PHONOS_MSA_DEADLINE_SECONDS = env_int("PHONOS_MSA_DEADLINE_SECONDS", 1800, minimum=1)
# The build shown by GET /v1/system/status; empty: `git rev-parse HEAD` at start, or "unknown".
PHONOS_BUILD_SHA = env_str("PHONOS_BUILD_SHA")
# ESMFold micro-batching (docs/workers.md): jobs running at once in one worker process share
# forward passes of at most BATCH_MAX jobs and BATCH_TOKENS padded residues, in which at most
# BATCH_MAX_PADDING of the residues are padding; the first job waits up to BATCH_WAIT_MS for
# company. BATCH_MAX 1 turns it off.
PHONOS_ESMFOLD_BATCH_MAX = env_int("PHONOS_ESMFOLD_BATCH_MAX", 8, minimum=1)
PHONOS_ESMFOLD_BATCH_TOKENS = env_int("PHONOS_ESMFOLD_BATCH_TOKENS", 4096, minimum=1)
PHONOS_ESMFOLD_BATCH_WAIT_MS = env_int("PHONOS_ESMFOLD_BATCH_WAIT_MS", 50, minimum=0)
PHONOS_ESMFOLD_BATCH_MAX_PADDING = env_float(
    "PHONOS_ESMFOLD_BATCH_MAX_PADDING", 0.3, minimum=0.0, maximum=1.0
)
CELERY_BEAT_SCHEDULE = {
    "jobs-sweep": {
        "task": "workers.tasks.sweep_jobs",
        "schedule": float(PHONOS_SWEEP_INTERVAL_SECONDS),
        "options": {"queue": "light", "expires": PHONOS_SWEEP_INTERVAL_SECONDS},
    },
}
