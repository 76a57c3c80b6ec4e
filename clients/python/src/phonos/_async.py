"""The asyncio client: the same calls as `Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from phonos import _calls as calls
from phonos._client import (
    POLL_INTERVAL_MAX_SECONDS,
    _bounded,
    _check,
    filename_from,
    write_file,
)
from phonos.errors import JobFailedError
from phonos.models import TERMINAL_STATUSES, Account, BatchResult, Job, Model, Usage


class AsyncClient:
    """`async with AsyncClient() as client: job = await client.predict(...)`.

    `Job` objects it returns are bound to it: `await job.wait()`. `wait` polls with backoff."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        options = calls.http_options(api_key, base_url, timeout)
        self.base_url: str = options["base_url"]
        self.max_retries = max_retries
        self._http = httpx.AsyncClient(**options, transport=transport)
        self.jobs = AsyncJobs(self)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: calls.Call) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(**call.request_arguments())
            except httpx.TransportError as exc:
                delay = calls.connection_failure_delay(call, exc, attempt, self.max_retries)
                await asyncio.sleep(delay)
                continue
            if response.is_success:
                return response
            await asyncio.sleep(calls.failure_delay(response, attempt, self.max_retries))

    async def _run(self, call: calls.Call) -> Any:
        return call.read((await self._send(call)).json(), self)

    async def models(self) -> list[Model]:
        return await self._run(calls.models())

    async def account(self) -> Account:
        return await self._run(calls.account())

    async def usage(self, days: int = 30) -> Usage:
        return await self._run(calls.usage(days))

    async def predict(
        self,
        model: str,
        sequence: str,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        wait: bool = False,
        *,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        call = calls.predict(model, sequence, name, params, webhook_url, idempotency_key)
        job_id = await self._run(call)
        return await (self.jobs.wait(job_id) if wait else self.jobs.get(job_id))

    async def batch(
        self, jobs: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> BatchResult:
        return await self._run(calls.batch(jobs, idempotency_key))

    async def pipeline(
        self, *, fold: dict[str, Any], dock: dict[str, Any], idempotency_key: str | None = None
    ) -> list[Job]:
        ids = await self._run(calls.pipeline(fold, dock, idempotency_key))
        return [await self.jobs.get(job_id) for job_id in ids]


class AsyncJobs:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(
        self, status: str | None = None, model: str | None = None, search: str | None = None
    ) -> AsyncIterator[Job]:
        offset = 0
        while True:
            call = calls.job_page(offset, status=status, model=model, search=search)
            body = (await self._client._send(call)).json()
            for job in calls.page_items(body, self._client):
                yield job
            if not body["pagination"]["has_more"]:
                return
            offset += len(body["jobs"])

    async def get(self, job_id: str) -> Job:
        return await self._client._run(calls.job_get(job_id))

    async def cancel(self, job_id: str) -> Job:
        await self._client._run(calls.job_cancel(job_id))
        return await self.get(job_id)

    async def delete(self, job_id: str) -> dict[str, Any]:
        return await self._client._run(calls.job_delete(job_id))

    async def results(self, job_id: str) -> dict[str, Any]:
        return await self._client._run(calls.job_results(job_id))

    async def download(self, job_id: str, path: str | Path = ".") -> Path:
        call = calls.Call("GET", f"/v1/jobs/{job_id}/download")
        return await self._save(call, path, f"{job_id}.pdb")

    async def archive(self, job_id: str, path: str | Path = ".") -> Path:
        call = calls.Call("GET", f"/v1/jobs/{job_id}/results/archive")
        return await self._save(call, path, f"{job_id}.zip")

    async def _save(self, call: calls.Call, path: str | Path, fallback: str) -> Path:
        response = await self._client._send(call)
        return write_file(path, filename_from(response, fallback), iter([response.content]))

    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        progress: bool = False,
        raise_on_failure: bool = False,
    ) -> Job:
        """Poll with backoff until the job ends (`progress` is accepted for symmetry)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poll_every = 0.5
        job = await self.get(job_id)
        while job.status not in TERMINAL_STATUSES:
            _check(deadline, job)
            await asyncio.sleep(_bounded(poll_every, deadline))
            poll_every = min(poll_every * 1.5, POLL_INTERVAL_MAX_SECONDS)
            job = await self.get(job_id)
        if raise_on_failure and job.status != "completed":
            raise JobFailedError(job)
        return job
