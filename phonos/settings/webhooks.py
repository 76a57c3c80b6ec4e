"""Signed webhook deliveries (docs/webhooks.md)."""

import base64
import binascii
import hashlib

from phonos.env import (
    ImproperlyConfiguredEnv,
    env_bool,
    env_float_list,
    env_int,
    env_list,
)
from phonos.settings.models import *  # noqa: F403

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
