"""Typed results, field for field as `/v1/openapi.json` describes them (a test keeps them equal).

Every object keeps the whole answer in `raw`, so fields the server adds later are not lost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})

T = TypeVar("T", bound="_Resource")


@dataclass
class _Resource:
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)} - {"raw"}
        return cls(raw=data, **{name: data.get(name) for name in names})


@dataclass
class Model(_Resource):
    """Schema `Model`."""

    id: str = ""
    name: str = ""
    description: str = ""
    type: str = ""
    cost_credits: int = 0
    max_sequence_length: int = 0
    params: dict[str, Any] | None = None
    params_schema: dict[str, Any] | None = None
    input: str = ""
    outputs: dict[str, Any] | None = None
    cost_rule: str | None = None
    available: bool | None = None


@dataclass
class Account(_Resource):
    """Schema `AccountOverview`: the account, its credits, job counts and the calling key."""

    account: dict[str, Any] | None = None
    credits: dict[str, Any] | None = None
    jobs: dict[str, Any] | None = None
    api_key: dict[str, Any] | None = None

    @property
    def balance(self) -> int:
        return int((self.credits or {}).get("balance", 0))


@dataclass
class Usage(_Resource):
    """Schema `Usage`."""

    period: dict[str, Any] | None = None
    totals: dict[str, Any] | None = None
    by_endpoint: list[dict[str, Any]] | None = None
    by_model: list[dict[str, Any]] | None = None
    daily: list[dict[str, Any]] | None = None


@dataclass
class Webhook(_Resource):
    """Schema `Webhook` (`secret` is set only in the answer that created or rotated it)."""

    webhook_id: str = ""
    url: str = ""
    events: list[str] | None = None
    enabled: bool = True
    failing_since: str | None = None
    disabled_at: str | None = None
    disabled_reason: str = ""
    secret_hint: str = ""
    created_at: str = ""
    secret: str | None = None


@dataclass
class Delivery(_Resource):
    """Schema `WebhookDelivery`."""

    delivery_id: str = ""
    event: str = ""
    status: str = ""
    attempt_count: int = 0
    next_retry_at: str | None = None
    created_at: str = ""
    finished_at: str | None = None
    attempts: list[dict[str, Any]] | None = None


@dataclass
class BatchResult(_Resource):
    """Schema `BatchResult`: one result per submitted job, in order."""

    success: bool = False
    summary: dict[str, Any] | None = None
    results: list[dict[str, Any]] | None = None

    @property
    def job_ids(self) -> list[str]:
        return [r["job_id"] for r in self.results or [] if r.get("success")]


@dataclass
class Job(_Resource):
    """Schema `Job`. Bound to the client that fetched it: `wait`, `download`, `results`, ...

    With an `AsyncClient` those methods return awaitables.
    """

    job_id: str = ""
    name: str = ""
    model: str = ""
    status: str = ""
    stage: str = ""
    progress: float | None = None
    credits_used: int = 0
    credits_refunded: int = 0
    created_at: str = ""
    updated_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    output_file: str | None = None
    download_url: str | None = None
    depends_on: str | None = None
    sequence: str = ""
    params: dict[str, Any] | None = None
    cached: bool = False
    cached_from: str | None = None
    metrics: dict[str, Any] | None = None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    _client: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def bound(cls, data: dict[str, Any], client: Any) -> Job:
        job = cls.from_dict(data)
        job._client = client
        return job

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def refresh(self) -> Any:
        return self._client.jobs.get(self.job_id)

    def wait(
        self, timeout: float | None = None, progress: bool = True, raise_on_failure: bool = False
    ) -> Any:
        return self._client.jobs.wait(
            self.job_id, timeout=timeout, progress=progress, raise_on_failure=raise_on_failure
        )

    def cancel(self) -> Any:
        return self._client.jobs.cancel(self.job_id)

    def download(self, path: str) -> Any:
        return self._client.jobs.download(self.job_id, path)

    def results(self) -> Any:
        return self._client.jobs.results(self.job_id)

    def archive(self, path: str) -> Any:
        return self._client.jobs.archive(self.job_id, path)


SCHEMA_OF: dict[type[_Resource], str] = {
    Model: "Model",
    Account: "AccountOverview",
    Usage: "Usage",
    Webhook: "Webhook",
    Delivery: "WebhookDelivery",
    BatchResult: "BatchResult",
    Job: "Job",
}
