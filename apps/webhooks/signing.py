"""Webhook secrets and signatures, as the Standard Webhooks specification defines them.

A secret is `whsec_` + base64 of 32 random bytes. Each request carries `webhook-id`,
`webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`;
several space-separated signatures are sent while a rotated-out secret is still valid.

Secrets are stored encrypted (Fernet, keys from PHONOS_WEBHOOK_SECRET_KEY), not hashed: signing
needs the secret itself.
"""

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings

SECRET_PREFIX = "whsec_"


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in settings.PHONOS_WEBHOOK_SECRET_KEYS])


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_hint(*, secret: str) -> str:
    """Enough of a secret to tell two apart, not to use one."""
    return secret[: len(SECRET_PREFIX) + 4]


def secret_encrypt(*, secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def secret_decrypt(*, token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def signature_compute(*, secret: str, message_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    *, signing_secrets: list[str], message_id: str, timestamp: int, body: str
) -> dict[str, str]:
    signatures = [
        signature_compute(secret=secret, message_id=message_id, timestamp=timestamp, body=body)
        for secret in signing_secrets
    ]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }
