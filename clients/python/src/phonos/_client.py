"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from phonos import _calls as calls
from phonos._progress import JobProgress
from phonos.errors import (
    JobFailedError,
    NotFoundError,
    PhonosError,
    RateLimitError,
    WaitTimeout,
)
from phonos.models import TERMINAL_STATUSES, Account, BatchResult, Delivery, Job, Model, Usage
from phonos.models import Webhook as WebhookModel

# After this many broken event streams in a row, `wait` polls instead.
STREAM_FAILURES_BEFORE_POLLING = 3
POLL_INTERVAL_MAX_SECONDS = 10.0


def write_file(path: str | Path, default_name: str, content: Iterator[bytes]) -> Path:
    """Write to `path` (a directory gets `default_name` inside it) through a temporary file,
    so an interrupted download never leaves a truncated structure behind."""
    target = Path(path)
    if target.is_dir():
        target = target / default_name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with partial.open("wb") as handle:
        for chunk in content:
            handle.write(chunk)
    partial.replace(target)
    return target


def filename_from(response: httpx.Response, fallback: str) -> str:
    disposition = response.headers.get("Content-Disposition", "")
    for part in disposition.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "filename" and value.strip('"'):
            return Path(value.strip('"')).name
    return fallback


class Client:
    """`Client(api_key=None, base_url=None)`; both default to `PHONOS_API_KEY` and
    `PHONOS_BASE_URL`. Retries 429/5xx answers (honouring Retry-After) and lost connections,
    at most `max_retries` times; submissions keep one Idempotency-Key across their retries."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        options = calls.http_options(api_key, base_url, timeout)
        self.base_url: str = options["base_url"]
        self.max_retries = max_retries
        self._http = httpx.Client(**options, transport=transport)
        self.jobs = Jobs(self)
        self.webhooks = Webhooks(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport ---------------------------------------------------------------------------

    def _send(self, call: calls.Call, *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            request = self._http.build_request(
                **call.request_arguments(),
                timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                time.sleep(calls.connection_failure_delay(call, exc, attempt, self.max_retries))
                continue
            if response.is_success:
                return response
            if stream:
                response.read()
            time.sleep(calls.failure_delay(response, attempt, self.max_retries))

    def _run(self, call: calls.Call) -> Any:
        return call.read(self._send(call).json(), self)

    # ---- account and models -----------------------------------------------------------------

    def models(self) -> list[Model]:
        return self._run(calls.models())

    def account(self) -> Account:
        return self._run(calls.account())

    def usage(self, days: int = 30) -> Usage:
        return self._run(calls.usage(days))

    # ---- submitting --------------------------------------------------------------------------

    def predict(
        self,
        model: str,
        sequence: str,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        wait: bool = False,
        *,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        progress: bool = True,
    ) -> Job:
        job_id = self._run(
            calls.predict(model, sequence, name, params, webhook_url, idempotency_key)
        )
        return self.jobs.wait(job_id, progress=progress) if wait else self.jobs.get(job_id)

    def batch(
        self, jobs: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> BatchResult:
        return self._run(calls.batch(jobs, idempotency_key))

    def pipeline(
        self, *, fold: dict[str, Any], dock: dict[str, Any], idempotency_key: str | None = None
    ) -> list[Job]:
        return [self.jobs.get(i) for i in self._run(calls.pipeline(fold, dock, idempotency_key))]


class Jobs:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(
        self, status: str | None = None, model: str | None = None, search: str | None = None
    ) -> Iterator[Job]:
        """Every matching job, newest first, fetching pages of 100 as you iterate."""
        offset = 0
        while True:
            body = self._client._send(
                calls.job_page(offset, status=status, model=model, search=search)
            ).json()
            yield from calls.page_items(body, self._client)
            if not body["pagination"]["has_more"]:
                return
            offset += len(body["jobs"])

    def get(self, job_id: str) -> Job:
        return self._client._run(calls.job_get(job_id))

    def cancel(self, job_id: str) -> Job:
        self._client._run(calls.job_cancel(job_id))
        return self.get(job_id)

    def delete(self, job_id: str) -> dict[str, Any]:
        return self._client._run(calls.job_delete(job_id))

    def results(self, job_id: str) -> dict[str, Any]:
        return self._client._run(calls.job_results(job_id))

    def download(self, job_id: str, path: str | Path = ".") -> Path:
        """Write the job's structure file; `path` may be a file or a directory."""
        return self._save(calls.Call("GET", f"/v1/jobs/{job_id}/download"), path, f"{job_id}.pdb")

    def archive(self, job_id: str, path: str | Path = ".") -> Path:
        """Write every output of the job as one ZIP."""
        call = calls.Call("GET", f"/v1/jobs/{job_id}/results/archive")
        return self._save(call, path, f"{job_id}.zip")

    def _save(self, call: calls.Call, path: str | Path, fallback: str) -> Path:
        response = self._client._send(call, stream=True)
        try:
            return write_file(path, filename_from(response, fallback), response.iter_bytes())
        finally:
            response.close()

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[calls.Event]:
        """The job's event stream, once; resume with the last event's id."""
        for event in self._stream(job_id, last_event_id, timeout=None):
            if event is not None:
                yield event

    def _stream(
        self, job_id: str, last_event_id: str | None, timeout: float | None
    ) -> Iterator[calls.Event | None]:
        """Events, and None for each keep-alive, so a caller can check its own deadline."""
        call = calls.event_stream(job_id, last_event_id, timeout)
        response = self._client._send(call, stream=True)
        parser = calls.EventParser()
        try:
            for line in response.iter_lines():
                yield parser.feed(line)
        finally:
            response.close()

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        progress: bool = True,
        raise_on_failure: bool = False,
    ) -> Job:
        """Follow the job until it is completed, failed or cancelled and return it. Uses the
        event stream, falling back to polling with backoff when streams keep breaking."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        with JobProgress(job_id, progress and not job.done) as bar:
            bar.show(job.status, job.stage, job.progress)
            job = job if job.done else self._follow(job, bar, deadline)
        if raise_on_failure and job.status != "completed":
            raise JobFailedError(job)
        return job

    def _follow(self, job: Job, bar: JobProgress, deadline: float | None) -> Job:
        last_id: str | None = None
        failures = 0
        poll_every = 1.0
        while True:
            if failures < STREAM_FAILURES_BEFORE_POLLING:
                try:
                    read_timeout = 30.0 if deadline is None else _bounded(30.0, deadline) + 0.5
                    for event in self._stream(job.job_id, last_id, read_timeout):
                        _check(deadline, job)
                        if event is None:
                            continue
                        last_id = event.id or last_id
                        data = event.data
                        bar.show(data.get("status", ""), data.get("stage"), data.get("progress"))
                        if event.name in TERMINAL_STATUSES:
                            return self.get(job.job_id)
                    failures = 0
                except (NotFoundError, WaitTimeout):
                    raise
                except RateLimitError:
                    failures = STREAM_FAILURES_BEFORE_POLLING  # no stream slot: poll instead
                except (PhonosError, httpx.HTTPError):
                    failures += 1
                job = self.get(job.job_id)
            else:
                job = self.get(job.job_id)
                bar.show(job.status, job.stage, job.progress)
                time.sleep(_bounded(poll_every, deadline))
                poll_every = min(poll_every * 1.5, POLL_INTERVAL_MAX_SECONDS)
            if job.status in TERMINAL_STATUSES:
                bar.show(job.status, job.stage, job.progress)
                return job
            _check(deadline, job)


def _bounded(seconds: float, deadline: float | None) -> float:
    return seconds if deadline is None else max(0.0, min(seconds, deadline - time.monotonic()))


def _check(deadline: float | None, job: Job) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise WaitTimeout(f"job {job.job_id} is still {job.status}", error="Wait timeout")


class Webhooks:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> list[WebhookModel]:
        return self._client._run(calls.webhooks())

    def create(self, url: str, events: list[str] | None = None) -> WebhookModel:
        return self._client._run(calls.webhook_create(url, events))

    def delete(self, webhook_id: str) -> dict[str, Any]:
        return self._client._run(calls.webhook_delete(webhook_id))

    def test(self, webhook_id: str) -> dict[str, Any]:
        return self._client._run(calls.webhook_test(webhook_id))

    def deliveries(self, webhook_id: str, limit: int = 20) -> list[Delivery]:
        return self._client._run(calls.webhook_deliveries(webhook_id, limit))
