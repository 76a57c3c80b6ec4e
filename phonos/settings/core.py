"""The environment, the applications and middleware, languages and static files."""

import sys
from pathlib import Path

import django_stubs_ext

from phonos.env import (
    ImproperlyConfiguredEnv,
    env_bool,
    env_list,
    env_str,
)

# Django's generic classes (`ModelAdmin[Job]`, `UserCreationForm[User]`) subscriptable at run
# time, as django-stubs declares them for the type checker.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parents[2]
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
    # The hot path (the polled reads, the submission) answers here, without the dashboard's
    # middleware below.
    "apps.common.middleware.LeanApiMiddleware",
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
