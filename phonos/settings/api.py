"""The /v1 API's limits."""

from pathlib import Path

from apps.jobs.registry import MODELS as MODEL_REGISTRY
from phonos.env import (
    ImproperlyConfiguredEnv,
    env_int,
    env_str,
)
from phonos.settings.queues import *  # noqa: F403

# --- API ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["apps.accounts.permissions.HasApiKey"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "apps.common.exception_handler.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # `?format=` belongs to our API (results/structure?format=cif), not to DRF's renderers.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Phonos API",
    "DESCRIPTION": "Protein structure prediction and molecular docking.",
    "VERSION": "v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

PHONOS_VERSION = "v1"
# Requests larger than this are refused with 413 before the body is read.
PHONOS_MAX_REQUEST_BYTES = env_int("PHONOS_MAX_REQUEST_BYTES", 5 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = PHONOS_MAX_REQUEST_BYTES
PHONOS_DEFAULT_RATE_LIMIT = env_int("PHONOS_DEFAULT_RATE_LIMIT", 60, minimum=1)
PHONOS_MAX_ACTIVE_JOBS_PER_ACCOUNT = env_int("PHONOS_MAX_ACTIVE_JOBS_PER_ACCOUNT", 50, minimum=1)
PHONOS_QUEUE_CAPACITY = env_int("PHONOS_QUEUE_CAPACITY", 10_000, minimum=1)
PHONOS_MAX_BATCH_JOBS = 10
# Each model's limits are declared in its registry entry; PHONOS_MAX_LENGTH_<ID> and
# PHONOS_TIME_LIMIT_<ID> override them (docs/settings.md).
PHONOS_MAX_LENGTH = {
    spec.id: env_int(spec.max_length_setting, spec.default_max_length, minimum=1)
    for spec in MODEL_REGISTRY.values()
}
PHONOS_IDEMPOTENCY_TTL_HOURS = 24
# Where GET /v1/structure/fetch/{pdb_id} downloads entries from, and how long it waits.
PHONOS_RCSB_URL = env_str("PHONOS_RCSB_URL", "https://files.rcsb.org").rstrip("/")
# The whole fetch (connect, headers, body) must finish within PHONOS_RCSB_TIMEOUT_SECONDS.
PHONOS_RCSB_TIMEOUT_SECONDS = env_int("PHONOS_RCSB_TIMEOUT_SECONDS", 15, minimum=1)
PHONOS_RCSB_CONNECT_TIMEOUT_SECONDS = env_int("PHONOS_RCSB_CONNECT_TIMEOUT_SECONDS", 5, minimum=1)
PHONOS_RCSB_READ_TIMEOUT_SECONDS = env_int("PHONOS_RCSB_READ_TIMEOUT_SECONDS", 10, minimum=1)
PHONOS_SIGNUP_CREDITS = env_int("PHONOS_SIGNUP_CREDITS", 100, minimum=0)
PHONOS_STORAGE_DIR = Path(env_str("PHONOS_STORAGE_DIR", str(VAR_DIR / "storage")))
# Outputs go to S3 when a bucket is named; credentials come from boto3's usual sources.
PHONOS_S3_BUCKET = env_str("PHONOS_S3_BUCKET")
PHONOS_S3_PREFIX = env_str("PHONOS_S3_PREFIX", "phonos")
PHONOS_S3_ENDPOINT_URL = env_str("PHONOS_S3_ENDPOINT_URL")
PHONOS_S3_REGION = env_str("PHONOS_S3_REGION", "us-east-1")
PHONOS_S3_PRESIGN_SECONDS = env_int("PHONOS_S3_PRESIGN_SECONDS", 300, minimum=1)
# An API node and a worker on different machines must never disagree about where a job's files
# are: production keeps outputs in S3, or on local disk only when a (shared) directory is named.
if IS_PRODUCTION and not PHONOS_S3_BUCKET and not env_str("PHONOS_STORAGE_DIR"):
    raise ImproperlyConfiguredEnv(
        "PHONOS_ENV=production refuses job outputs on local disk by default: set "
        "PHONOS_S3_BUCKET, or PHONOS_STORAGE_DIR to a volume shared by every API node and worker"
    )
# Downloads stream through the API by default; "redirect" answers 302 to a presigned URL.
PHONOS_DOWNLOAD_MODE = env_str("PHONOS_DOWNLOAD_MODE", "stream")
if PHONOS_DOWNLOAD_MODE not in {"stream", "redirect"}:
    raise ImproperlyConfiguredEnv("PHONOS_DOWNLOAD_MODE must be stream or redirect")
