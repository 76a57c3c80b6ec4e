"""Strict readers for settings that come from the environment.

Each helper refuses a malformed value with a message naming the variable, so a typo in a
deployment fails at start-up instead of at the first request.
"""

import math
import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse


class ImproperlyConfiguredEnv(Exception):
    pass


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfiguredEnv(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(
    name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError(raw)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfiguredEnv(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfiguredEnv(f"{name} must be <= {maximum}, got {value}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfiguredEnv(f"{name} must be a boolean (true/false), got {raw!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_float_list(name: str, default: list[float], *, minimum: float | None = None) -> list[float]:
    """A comma-separated list of numbers, e.g. `5,300,1800`; empty items are refused."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    values = []
    for item in raw.split(","):
        try:
            value = float(item.strip())
            if not math.isfinite(value):
                raise ValueError(item)
        except ValueError:
            raise ImproperlyConfiguredEnv(
                f"{name} must be comma-separated numbers, got {raw!r}"
            ) from None
        if minimum is not None and value < minimum:
            raise ImproperlyConfiguredEnv(f"{name} items must be >= {minimum}, got {value}")
        values.append(value)
    return values


def _postgres_options(options: dict[str, str]) -> dict[str, Any]:
    """libpq options from the URL, plus server-side binding: psycopg then sends parameters
    apart from the SQL and prepares a statement the fifth time a connection runs it, so that
    PostgreSQL stops parsing and planning the hot path's statements on every request (planning
    was most of their cost; docs/benchmarks.md). `server_side_binding=false` in the URL turns it
    off, e.g. behind a PgBouncer older than 1.21 in transaction mode, which cannot keep
    prepared statements."""
    chosen: dict[str, Any] = dict(options)
    binding = chosen.pop("server_side_binding", "true").lower()
    if binding not in {"true", "false"}:
        raise ImproperlyConfiguredEnv("DATABASE_URL's server_side_binding must be true or false")
    chosen["server_side_binding"] = binding == "true"
    return chosen


def database_from_url(url: str) -> dict[str, Any]:
    """Turn `postgres://user:pass@host:port/name?option=value` or `sqlite:///path` into a
    DATABASES entry. Query options (`sslmode=require`, `connect_timeout=5`, ...) become libpq
    connection options, as dj-database-url passes them."""
    parsed = urlparse(url)
    if parsed.scheme in {"postgres", "postgresql"}:
        name = parsed.path.lstrip("/")
        if not name:
            raise ImproperlyConfiguredEnv("DATABASE_URL must name a database")
        try:
            options = dict(parse_qsl(parsed.query, keep_blank_values=False, strict_parsing=True))
        except ValueError:
            raise ImproperlyConfiguredEnv(
                f"DATABASE_URL has a malformed query string: {parsed.query!r}"
            ) from None
        return {
            "ENGINE": "phonos.postgresql",
            "NAME": unquote(name),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": _postgres_options(options),
        }
    if parsed.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parsed.path}
    raise ImproperlyConfiguredEnv(
        f"DATABASE_URL scheme {parsed.scheme!r} is not supported (use postgres:// or sqlite://)"
    )
