"""The dashboard, accounts, sign-up and login, transport security."""

from datetime import timedelta

from phonos.env import (
    ImproperlyConfiguredEnv,
    env_bool,
    env_int,
    env_str,
)
from phonos.settings.billing import *  # noqa: F403

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
