"""Verify a Phonos webhook delivery (Standard Webhooks: https://www.standardwebhooks.com).

payload = phonos.webhooks.verify(request.body, request.headers, secret)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from phonos.errors import WebhookVerificationError

SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing header {name}")


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """Check the signature and the timestamp and return the parsed event; raise
    `WebhookVerificationError` otherwise. `payload` must be the raw body as received."""
    body = payload.decode() if isinstance(payload, bytes) else payload
    message_id = _header(headers, "webhook-id")
    timestamp_text = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance")
    key = secret.removeprefix(SECRET_PREFIX)
    try:
        raw_key = base64.b64decode(key, validate=True)
    except ValueError:
        raise WebhookVerificationError("the secret is not base64 (whsec_...)") from None
    expected = base64.b64encode(
        hmac.new(raw_key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    ).decode()
    for signature in signatures.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise WebhookVerificationError("no signature matches")
