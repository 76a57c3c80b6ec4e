"""Settings for the test suite: real PostgreSQL and Redis (see scripts/test, which starts them)."""

import os

os.environ.setdefault("PHONOS_ENV", "test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/phonos")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault(
    "PHONOS_VAR_DIR", os.path.join(os.path.dirname(__file__), "..", "var", "test")
)

from phonos.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The live server first tries every path under MEDIA_URL as a file in MEDIA_ROOT; with Django's
# empty default that is every path, and a very long one fails in os.stat before reaching the API.
MEDIA_URL = "/media/"
