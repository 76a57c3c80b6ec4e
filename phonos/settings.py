"""Phonos settings, read once from the environment (see docs/settings.md for every variable).

With nothing set, Phonos runs on an embedded default that needs no external server: SQLite and
local files under `var/`. `PHONOS_ENV=production` refuses to start without PostgreSQL and Redis.
"""

import base64
import binascii
import hashlib
import sys
from datetime import timedelta
from pathlib import Path

from apps.jobs.registry import MODELS as MODEL_REGISTRY
from phonos.env import (
    ImproperlyConfiguredEnv,
    database_from_url,
    env_bool,
    env_float,
    env_float_list,
    env_int,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PHONOS_VAR_DIR", str(BASE_DIR / "var")))

# --- Environment -------------------------------------------------------------------------------
PHONOS_ENV = env_str("PHONOS_ENV", "development")
if PHONOS_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfiguredEnv(
        f"PHONOS_ENV must be development, production or test, got {PHONOS_ENV!r}"
    )
IS_PRODUCTION = PHONOS_ENV == "production"

DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
if IS_PRODUCTION:
    missing = [
        name
        for name, value in (("DATABASE_URL", DATABASE_URL), ("REDIS_URL", REDIS_URL))
        if not value
    ]
    if missing or not DATABASE_URL.startswith(("postgres://", "postgresql://")):
        sys.stderr.write(
            "PHONOS_ENV=production needs PostgreSQL and Redis: set DATABASE_URL=postgres://... "
            "and REDIS_URL=redis://... (missing or wrong: "
            + (", ".join(missing) or "DATABASE_URL is not PostgreSQL")
            + ")\n"
        )
        raise SystemExit(2)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if IS_PRODUCTION:
        raise ImproperlyConfiguredEnv("SECRET_KEY must be set in production")
    SECRET_KEY = "phonos-development-only-secret-key-not-for-production"
DEBUG = env_bool("DEBUG", False)
if IS_PRODUCTION and DEBUG:
    # DEBUG pages show settings, SQL and tracebacks to anyone; never in production.
    raise ImproperlyConfiguredEnv("DEBUG=true is refused with PHONOS_ENV=production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"] if not IS_PRODUCTION else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- Applications ------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "apps.common",
    "apps.accounts",
    "apps.billing",
    "apps.jobs",
    "apps.usage",
    "apps.webhooks",
    "apps.dashboard",
    "axes",
    "apps.ops",
]

MIDDLEWARE = [
    # First, so that every answer (a 413 too) carries X-Request-ID and is counted.
    "apps.ops.middleware.RequestObservabilityMiddleware",
    "apps.common.middleware.RequestSizeLimitMiddleware",
    "apps.usage.middleware.UsageRecordingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a lockout found during authentication into a 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "phonos.urls"
WSGI_APPLICATION = "phonos.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ----------------------------------------------------------------------------------
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "phonos.sqlite3",
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and Redis ---------------------------------------------------------------------------
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ------------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "light"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker that is down must not hang a submission: the sweeper re-enqueues pending jobs.
CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}

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
# Seconds a model task may run past its soft limit before Celery kills it (the hard limit).
PHONOS_HARD_LIMIT_GRACE_SECONDS = 60
# Redis hands an unacknowledged message to another worker after this long. It must outlast the
# longest hard time limit, or a long job still running would be started a second time; a worker
# that dies instead is noticed by the sweeper's heartbeat check long before (docs/workers.md).
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

# --- Webhooks (docs/webhooks.md) ---------------------------------------------------------------
# Fernet keys that encrypt webhook signing secrets at rest, comma-separated: the first encrypts,
# all decrypt, so the key can be rotated. Outside production a key derived from SECRET_KEY is used.
PHONOS_WEBHOOK_SECRET_KEYS = env_list("PHONOS_WEBHOOK_SECRET_KEY", [])
if not PHONOS_WEBHOOK_SECRET_KEYS:
    if IS_PRODUCTION:
        raise ImproperlyConfiguredEnv(
            "PHONOS_WEBHOOK_SECRET_KEY must be set in production (a Fernet key: "
            "python -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"
        )
    PHONOS_WEBHOOK_SECRET_KEYS = [
        base64.urlsafe_b64encode(
            hashlib.sha256(b"phonos-webhook-secrets:" + SECRET_KEY.encode()).digest()
        ).decode()
    ]
for _key in PHONOS_WEBHOOK_SECRET_KEYS:
    try:
        _key_length = len(base64.urlsafe_b64decode(_key.encode()))
    except (binascii.Error, ValueError):
        _key_length = 0
    if _key_length != 32:
        raise ImproperlyConfiguredEnv(
            "PHONOS_WEBHOOK_SECRET_KEY must hold Fernet keys (32 bytes, url-safe base64)"
        )
# Plain http:// and private or loopback receivers are for local development and tests only.
PHONOS_WEBHOOK_ALLOW_HTTP = env_bool("PHONOS_WEBHOOK_ALLOW_HTTP", False)
PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS = env_bool("PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS", False)
if IS_PRODUCTION and (PHONOS_WEBHOOK_ALLOW_HTTP or PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS):
    raise ImproperlyConfiguredEnv(
        "PHONOS_WEBHOOK_ALLOW_HTTP and PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS are refused in production"
    )
PHONOS_WEBHOOKS_PER_ACCOUNT = 5
PHONOS_WEBHOOK_TIMEOUT_SECONDS = env_int("PHONOS_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
# Seconds to wait before each retry; one attempt plus one retry per item (8 attempts, ~32 h).
PHONOS_WEBHOOK_RETRY_SCHEDULE = env_float_list(
    "PHONOS_WEBHOOK_RETRY_SCHEDULE", [5, 300, 1800, 7200, 18000, 36000, 50400], minimum=0
)
# An endpoint whose deliveries have failed, without a success, for this long is disabled.
PHONOS_WEBHOOK_DISABLE_AFTER_HOURS = env_int("PHONOS_WEBHOOK_DISABLE_AFTER_HOURS", 120, minimum=1)
# Finished deliveries (and their attempts) older than this are deleted by the sweeper.
PHONOS_WEBHOOK_DELIVERY_RETENTION_DAYS = env_int(
    "PHONOS_WEBHOOK_DELIVERY_RETENTION_DAYS", 30, minimum=1
)
PHONOS_WEBHOOK_SWEEP_SECONDS = env_int("PHONOS_WEBHOOK_SWEEP_SECONDS", 60, minimum=1)
CELERY_BEAT_SCHEDULE["webhook-deliveries-sweep"] = {
    "task": "apps.webhooks.tasks.webhook_deliveries_sweep",
    "schedule": float(PHONOS_WEBHOOK_SWEEP_SECONDS),
    "options": {"queue": "light", "expires": PHONOS_WEBHOOK_SWEEP_SECONDS},
}

# --- Stripe credit top-ups (docs/billing.md) ---------------------------------------------------
from apps.billing.packs import DEFAULT_CREDIT_PACKS, credit_packs_parse, currency_parse  # noqa: E402

try:
    PHONOS_CREDIT_PACKS = credit_packs_parse(env_str("PHONOS_CREDIT_PACKS", DEFAULT_CREDIT_PACKS))
    PHONOS_CURRENCY = currency_parse(env_str("PHONOS_CURRENCY", "usd"))
except ValueError as error:
    raise ImproperlyConfiguredEnv(f"PHONOS_CREDIT_PACKS / PHONOS_CURRENCY: {error}") from None
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
# Only tests and stripe-mock change this; the SDK's default is https://api.stripe.com.
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com")
# Where Stripe sends the buyer back; Stripe fills in {CHECKOUT_SESSION_ID}.
PHONOS_CHECKOUT_SUCCESS_URL = env_str(
    "PHONOS_CHECKOUT_SUCCESS_URL",
    "http://localhost:8000/dashboard/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}",
)
PHONOS_CHECKOUT_CANCEL_URL = env_str(
    "PHONOS_CHECKOUT_CANCEL_URL", "http://localhost:8000/dashboard/billing?checkout=cancelled"
)
if IS_PRODUCTION and STRIPE_SECRET_KEY:
    _missing_stripe = [
        name
        for name in (
            "STRIPE_WEBHOOK_SECRET",
            "PHONOS_CHECKOUT_SUCCESS_URL",
            "PHONOS_CHECKOUT_CANCEL_URL",
        )
        if not env_str(name)
    ]
    if _missing_stripe:
        raise ImproperlyConfiguredEnv(
            "STRIPE_SECRET_KEY is set, so production also needs " + ", ".join(_missing_stripe)
        )

# --- Internationalisation, static --------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "static"
# The dashboard's front-end assets come from npm (package.json, `npm ci`), never a CDN; only
# the prebuilt files it serves are exposed, not the whole node_modules tree.
STATICFILES_DIRS = [
    ("vendor/molstar", BASE_DIR / "node_modules" / "molstar" / "build" / "viewer"),
    ("vendor/chartjs", BASE_DIR / "node_modules" / "chart.js" / "dist"),
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
]

# --- Dashboard (docs/dashboard.md) -------------------------------------------------------------
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "dashboard:login"
# Password-reset mail: console by default; `file` writes each message under EMAIL_FILE_PATH.
EMAIL_BACKENDS = {
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
}
PHONOS_EMAIL_BACKEND = env_str("PHONOS_EMAIL_BACKEND", "console")
if PHONOS_EMAIL_BACKEND not in EMAIL_BACKENDS:
    raise ImproperlyConfiguredEnv(
        f"PHONOS_EMAIL_BACKEND must be one of {', '.join(EMAIL_BACKENDS)}, "
        f"got {PHONOS_EMAIL_BACKEND!r}"
    )
EMAIL_BACKEND = EMAIL_BACKENDS[PHONOS_EMAIL_BACKEND]
EMAIL_FILE_PATH = env_str("PHONOS_EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Phonos <no-reply@phonos.local>")

# --- Accounts, sign-up and login (docs/dashboard.md) -------------------------------------------
# Reverse proxies in front of Phonos that append to X-Forwarded-For; 0 trusts no header and uses
# the connection's address. apps.common.client_ip is the one place that reads it.
PHONOS_TRUSTED_PROXY_COUNT = env_int("PHONOS_TRUSTED_PROXY_COUNT", 0, minimum=0)
PHONOS_SIGNUP_MAX_PER_IP = env_int("PHONOS_SIGNUP_MAX_PER_IP", 5, minimum=1)
PHONOS_SIGNUP_WINDOW_SECONDS = env_int("PHONOS_SIGNUP_WINDOW_SECONDS", 3600, minimum=1)
PHONOS_EMAIL_VERIFICATION_MAX_AGE_SECONDS = env_int(
    "PHONOS_EMAIL_VERIFICATION_MAX_AGE_SECONDS", 3 * 24 * 3600, minimum=60
)
PHONOS_MAX_KEY_RATE_LIMIT = env_int("PHONOS_MAX_KEY_RATE_LIMIT", 600, minimum=1)
PHONOS_MAX_ACTIVE_KEYS_PER_ACCOUNT = env_int("PHONOS_MAX_ACTIVE_KEYS_PER_ACCOUNT", 20, minimum=1)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Failed logins (dashboard, admin, and the password asked for again when creating a key) are
# counted by django-axes per username and, separately, per client IP; either limit locks out.
PHONOS_LOGIN_MAX_FAILURES = env_int("PHONOS_LOGIN_MAX_FAILURES", 5, minimum=1)
PHONOS_LOGIN_MAX_FAILURES_PER_IP = env_int("PHONOS_LOGIN_MAX_FAILURES_PER_IP", 20, minimum=1)
PHONOS_LOGIN_FAILURE_WINDOW_SECONDS = env_int("PHONOS_LOGIN_FAILURE_WINDOW_SECONDS", 900, minimum=1)
if PHONOS_LOGIN_MAX_FAILURES_PER_IP < PHONOS_LOGIN_MAX_FAILURES:
    raise ImproperlyConfiguredEnv(
        "PHONOS_LOGIN_MAX_FAILURES_PER_IP must be >= PHONOS_LOGIN_MAX_FAILURES"
    )
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "apps.accounts.login_lockout.PerParameterLimitHandler"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # order read by PerParameterLimitHandler
AXES_FAILURE_LIMIT = PHONOS_LOGIN_MAX_FAILURES
AXES_COOLOFF_TIME = timedelta(seconds=PHONOS_LOGIN_FAILURE_WINDOW_SECONDS)
AXES_CLIENT_IP_CALLABLE = "apps.common.client_ip.client_ip"
AXES_LOCKOUT_TEMPLATE = "dashboard/locked_out.html"
# The handler clears a username's failures on success; axes' own reset would also clear the
# address's, letting a sprayer reset its count by logging in to an account of its own.
AXES_RESET_ON_SUCCESS = False
# Axes would also write a row per successful login, forever; the web server's log has those.
AXES_DISABLE_ACCESS_LOG = True

# --- Transport security (docs/settings.md) ------------------------------------------------------
SESSION_COOKIE_SECURE = IS_PRODUCTION
CSRF_COOKIE_SECURE = IS_PRODUCTION
SECURE_SSL_REDIRECT = env_bool("PHONOS_SSL_REDIRECT", IS_PRODUCTION)
# Load balancers probe health over plain HTTP on the internal port.
SECURE_REDIRECT_EXEMPT = [r"^v1/health"]
SECURE_HSTS_SECONDS = env_int(
    "PHONOS_HSTS_SECONDS", 365 * 24 * 3600 if IS_PRODUCTION else 0, minimum=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("PHONOS_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("PHONOS_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    # Preloading commits the whole registered domain to HTTPS in browsers for months; an operator
    # opts in (PHONOS_HSTS_PRELOAD=true), so its deploy warning is not a fault to fix here.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
# Only behind a proxy that terminates TLS and sets X-Forwarded-Proto itself (overwriting what the
# client sent): otherwise any client could claim https.
PHONOS_TLS_TERMINATED_AT_PROXY = env_bool("PHONOS_TLS_TERMINATED_AT_PROXY", False)
if PHONOS_TLS_TERMINATED_AT_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

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
