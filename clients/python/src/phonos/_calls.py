"""Every API call described once, without I/O: the sync and async clients both execute these.

A `Call` is the request (method, path, query, body) plus how to read the answer.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from phonos.errors import ConnectionError, PhonosError, error_for
from phonos.models import Account as AccountOverview
from phonos.models import BatchResult, Delivery, Job, Model, Usage, Webhook

DEFAULT_BASE_URL = "https://app.phonos.bio"
# Submissions retried after a lost answer reuse their key, so the server charges them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "DELETE", "PUT"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 120.0
PAGE_SIZE = 100


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    idempotency_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds to wait for the answer (and, for streams, between two lines); None: the client's.
    timeout: float | None = None
    read: Callable[[Any, Any], Any] = lambda body, client: body

    @property
    def retryable(self) -> bool:
        return self.method in IDEMPOTENT_METHODS or self.idempotency_key is not None

    def request_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", **self.headers}
        if self.idempotency_key:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers

    def request_arguments(self) -> dict[str, Any]:
        """The keyword arguments of `httpx`'s `request` and `build_request` for this call."""
        return {
            "method": self.method,
            "url": self.path,
            "params": self.params,
            "json": self.json,
            "headers": self.request_headers(),
        }


def resolve_config(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    key = api_key or os.environ.get("PHONOS_API_KEY", "")
    if not key:
        raise PhonosError("No API key: pass api_key= or set PHONOS_API_KEY")
    url = (base_url or os.environ.get("PHONOS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    return key, url


def http_options(api_key: str | None, base_url: str | None, timeout: float) -> dict[str, Any]:
    """The keyword arguments of the sync and async clients' `httpx` client."""
    key, url = resolve_config(api_key, base_url)
    return {
        "base_url": url,
        "headers": {"Authorization": f"Bearer {key}", "User-Agent": "phonos-python/0.1"},
        "timeout": timeout,
        "follow_redirects": True,
    }


class Answer(Protocol):
    """What the retry policy reads of an HTTP answer (an `httpx.Response`)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...


def failure_delay(answer: Answer, attempt: int, max_retries: int) -> float:
    """Seconds before retrying an unsuccessful answer; raises its error when it is not to be
    retried (a status that is not transient, or no retries left)."""
    status = answer.status_code
    retry_after = parse_retry_after(answer.headers.get("Retry-After"))
    error = error_from(status, answer.content, retry_after)
    if status not in RETRY_STATUSES or attempt > max_retries:
        raise error
    return retry_delay(attempt, retry_after)


def connection_failure_delay(call: Call, error: Exception, attempt: int, max_retries: int) -> float:
    """Seconds before retrying a call that got no answer; raises `ConnectionError` when it is
    not to be retried (not idempotent, or no retries left)."""
    if not call.retryable or attempt > max_retries:
        raise ConnectionError(f"{call.method} {call.path}: {error}") from error
    return retry_delay(attempt, None)


def retry_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds before retry number `attempt` (1-based): the server's Retry-After when it gave
    one, else exponential backoff with jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
    return min(0.5 * 2 ** (attempt - 1), 30.0) * (0.5 + random.random() / 2)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_from(status: int, content: bytes, retry_after: float | None) -> PhonosError:
    try:
        body = json.loads(content)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if "message" not in body:
        body.setdefault("message", content[:500].decode(errors="replace"))
    return error_for(status, body, retry_after)


def new_idempotency_key() -> str:
    return f"phonos-py-{uuid.uuid4()}"


def _job_params(**filters: Any) -> dict[str, Any]:
    return {name: value for name, value in filters.items() if value not in (None, "")}


# ---- the calls ------------------------------------------------------------------------------


def models() -> Call:
    return Call("GET", "/v1/models", read=lambda b, c: [Model.from_dict(m) for m in b["models"]])


def account() -> Call:
    return Call("GET", "/v1/account", read=lambda b, c: AccountOverview.from_dict(b))


def usage(days: int) -> Call:
    return Call("GET", "/v1/usage", params={"days": days}, read=lambda b, c: Usage.from_dict(b))


def _submission(
    model: str,
    sequence: str,
    name: str | None,
    params: dict[str, Any] | None,
    webhook_url: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "sequence": sequence}
    if name is not None:
        body["name"] = name
    if params:
        body["params"] = params
    if webhook_url:
        body["webhook_url"] = webhook_url
    return body


def predict(
    model: str,
    sequence: str,
    name: str | None = None,
    params: dict[str, Any] | None = None,
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
) -> Call:
    return Call(
        "POST",
        "/v1/predict",
        json=_submission(model, sequence, name, params, webhook_url),
        idempotency_key=idempotency_key or new_idempotency_key(),
        read=lambda b, c: b["job_id"],
    )


def batch(jobs: list[dict[str, Any]], idempotency_key: str | None = None) -> Call:
    return Call(
        "POST",
        "/v1/batch",
        json={"jobs": jobs},
        idempotency_key=idempotency_key or new_idempotency_key(),
        read=lambda b, c: BatchResult.from_dict(b),
    )


def pipeline(
    fold: dict[str, Any], dock: dict[str, Any], idempotency_key: str | None = None
) -> Call:
    return Call(
        "POST",
        "/v1/pipelines",
        json={"fold": fold, "dock": dock},
        idempotency_key=idempotency_key or new_idempotency_key(),
        read=lambda b, c: [job["job_id"] for job in b["jobs"]],
    )


def job_get(job_id: str) -> Call:
    return Call("GET", f"/v1/jobs/{job_id}", read=lambda b, c: Job.bound(b, c))


def job_page(offset: int, **filters: Any) -> Call:
    params = {**_job_params(**filters), "limit": PAGE_SIZE, "offset": offset}
    return Call("GET", "/v1/jobs", params=params)


def page_items(body: dict[str, Any], client: Any) -> Iterator[Job]:
    for item in body["jobs"]:
        yield Job.bound(item, client)


def job_cancel(job_id: str) -> Call:
    return Call("POST", f"/v1/jobs/{job_id}/cancel", idempotency_key=new_idempotency_key())


def job_delete(job_id: str) -> Call:
    return Call("DELETE", f"/v1/jobs/{job_id}")


def job_results(job_id: str) -> Call:
    return Call("GET", f"/v1/jobs/{job_id}/results")


def webhooks() -> Call:
    return Call(
        "GET", "/v1/webhooks", read=lambda b, c: [Webhook.from_dict(w) for w in b["webhooks"]]
    )


def webhook_create(url: str, events: list[str] | None = None) -> Call:
    body: dict[str, Any] = {"url": url}
    if events:
        body["events"] = events
    return Call("POST", "/v1/webhooks", json=body, read=lambda b, c: Webhook.from_dict(b))


def webhook_delete(webhook_id: str) -> Call:
    return Call("DELETE", f"/v1/webhooks/{webhook_id}")


def webhook_test(webhook_id: str) -> Call:
    return Call("POST", f"/v1/webhooks/{webhook_id}/test")


def webhook_deliveries(webhook_id: str, limit: int = 20) -> Call:
    return Call(
        "GET",
        f"/v1/webhooks/{webhook_id}/deliveries",
        params={"limit": limit},
        read=lambda b, c: [Delivery.from_dict(d) for d in b["deliveries"]],
    )


def event_stream(job_id: str, last_event_id: str | None, timeout: float | None) -> Call:
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return Call("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout)


# ---- Server-Sent Events ---------------------------------------------------------------------


@dataclass
class Event:
    name: str
    data: dict[str, Any]
    id: str | None


class EventParser:
    """Turns the lines of a `text/event-stream` into events (the WHATWG rules we need)."""

    def __init__(self) -> None:
        self._name, self._data, self._id = "message", [], None
        self.last_id: str | None = None

    def feed(self, line: str) -> Event | None:
        if line == "":
            if not self._data:
                self._name = "message"
                return None
            try:
                data = json.loads("\n".join(self._data))
            except ValueError:
                data = {"raw": "\n".join(self._data)}
            event = Event(self._name, data if isinstance(data, dict) else {"raw": data}, self._id)
            self._name, self._data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._name = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = self.last_id = value
        return None
