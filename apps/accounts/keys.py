"""API key material: generation, hashing and the shape check done before any lookup."""

import hashlib
import re
import secrets

KEY_PREFIX = "pk_"
# 32 random bytes, URL-safe base64 without padding: 43 characters.
KEY_PATTERN = re.compile(r"^pk_[A-Za-z0-9_-]{43}$")
DISPLAY_PREFIX_LENGTH = 10


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def looks_like_key(raw_key: str) -> bool:
    return bool(KEY_PATTERN.match(raw_key))
