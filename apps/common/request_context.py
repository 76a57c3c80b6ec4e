"""What a log line belongs to: the request id (and, in a worker, the job), carried from the
HTTP request into the job row, its Celery task, the worker's log lines and the webhook delivery.

A context variable, so that each request thread, task and job sees only its own values.
"""

import re
import uuid
from contextvars import ContextVar, Token

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept only if it is short and plain: it goes into logs, a database column and
# the headers of outbound webhooks, so nothing that could forge a log line or a header.
REQUEST_ID_MAX_LENGTH = 64
REQUEST_ID_PATTERN = re.compile(rf"[A-Za-z0-9._:+=-]{{1,{REQUEST_ID_MAX_LENGTH}}}")

# Each value is a fresh dict, never mutated in place: a child context never changes its parent's.
_log_context: ContextVar[dict[str, str]] = ContextVar("phonos_log_context")


def request_id_clean(raw: str | None) -> str:
    """The client's id if it is acceptable, else a fresh one (never an error: an id is a
    convenience, not a reason to refuse a request)."""
    if raw and REQUEST_ID_PATTERN.fullmatch(raw):
        return raw
    return uuid.uuid4().hex


def request_id_current() -> str:
    return _log_context.get({}).get("request_id", "")


def log_context_get() -> dict[str, str]:
    return _log_context.get({})


def log_context_bind(**values: str) -> Token[dict[str, str]]:
    """Add values (empty ones are ignored) to the current context; returns the token that
    `log_context_reset` takes to restore what was there before."""
    merged = {**_log_context.get({}), **{key: value for key, value in values.items() if value}}
    return _log_context.set(merged)


def log_context_reset(token: Token[dict[str, str]]) -> None:
    _log_context.reset(token)


def log_context_replace(values: dict[str, str]) -> None:
    """Start afresh (a worker process between two tasks)."""
    _log_context.set({key: value for key, value in values.items() if value})
