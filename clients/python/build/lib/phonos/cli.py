"""`phonos`: the command line. Human-readable output by default, `--json` for scripts; the exit
status is non-zero when a command or any job it waited for failed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from phonos._client import Client
from phonos.errors import PhonosError
from phonos.fasta import read_fasta, safe_filename
from phonos.models import TERMINAL_STATUSES, Job

BATCH_SIZE = 10  # the API's most jobs per batch
LIST_PAGE = 100

out = Console()
err = Console(stderr=True)


class Context:
    def __init__(self, api_key: str | None, base_url: str | None, as_json: bool) -> None:
        self.api_key, self.base_url, self.as_json = api_key, base_url, as_json
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.api_key, self.base_url)
        return self._client

    def emit(self, data: Any, table: Table | str | None = None) -> None:
        if self.as_json or table is None:
            click.echo(json.dumps(data, indent=2, default=str))
        else:
            out.print(table)


pass_context = click.make_pass_decorator(Context)


class PhonosGroup(click.Group):
    """Turns API errors into one line on standard error and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PhonosError as exc:
            err.print(
                f"[red]error:[/red] {exc.message}" + (f" ({exc.status})" if exc.status else "")
            )
            sys.exit(1)


@click.group(cls=PhonosGroup)
@click.option("--api-key", envvar="PHONOS_API_KEY", help="default: $PHONOS_API_KEY")
@click.option("--base-url", envvar="PHONOS_BASE_URL", help="default: $PHONOS_BASE_URL")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def main(ctx: click.Context, api_key: str | None, base_url: str | None, as_json: bool) -> None:
    """Fold proteins and dock ligands with Phonos."""
    ctx.obj = Context(api_key, base_url, as_json)


def _param(values: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--param")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _job_table(jobs: list[Job]) -> Table:
    table = Table("name", "job", "model", "status", "stage", "progress")
    for job in jobs:
        progress = "" if job.progress is None else f"{job.progress:.0%}"
        colour = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(job.status)
        status = f"[{colour}]{job.status}[/{colour}]" if colour else job.status
        table.add_row(job.name, job.job_id, job.model, status, job.stage or "", progress)
    return table


@main.command()
@click.option("--model", required=True, help="esmfold, alphafold2, diffdock, vina")
@click.argument("input_file", metavar="INPUT", type=click.File("r"))
@click.option("--name", help="job name (one record); default: the FASTA header")
@click.option("--param", "params", multiple=True, help="a model parameter, key=value (repeat)")
@click.option("--wait", is_flag=True, help="follow the jobs until they end")
@click.option("--output", type=click.Path(file_okay=False), help="with --wait: save structures")
@pass_context
def predict(
    ctx: Context,
    model: str,
    input_file: Any,
    name: str | None,
    params: tuple[str, ...],
    wait: bool,
    output: str | None,
) -> None:
    """Submit INPUT (a FASTA file, or - for standard input). Several records go as batches of
    at most 10 jobs, each named after its header."""
    records = read_fasta(input_file.read(), default_name=name or "sequence")
    if not records:
        raise click.UsageError("INPUT holds no sequence")
    parameters = _param(params)
    client = ctx.client
    job_ids: list[str] = []
    failures = 0
    if len(records) == 1:
        record = records[0]
        job_ids.append(
            client.predict(model, record.sequence, name or record.name, parameters).job_id
        )
    else:
        for start in range(0, len(records), BATCH_SIZE):
            chunk = records[start : start + BATCH_SIZE]
            body = [
                {"model": model, "sequence": r.sequence, "name": r.name, "params": parameters}
                for r in chunk
            ]
            result = client.batch(body)
            for record, item in zip(chunk, result.results or [], strict=True):
                if item.get("success"):
                    job_ids.append(item["job_id"])
                else:
                    failures += 1
                    err.print(f"[red]refused[/red] {record.name}: {item.get('message', item)}")
    jobs = [client.jobs.get(job_id) for job_id in job_ids]
    if wait:
        jobs = _follow_all(client, jobs, Path(output) if output else None, ctx.as_json)
        failures += sum(job.status != "completed" for job in jobs)
    ctx.emit([job.raw for job in jobs], _job_table(jobs))
    sys.exit(1 if failures else 0)


def _follow_all(client: Client, jobs: list[Job], output: Path | None, quiet: bool) -> list[Job]:
    """Poll until every job ended, one list request per round (not one per job), showing a live
    table; save each completed structure as <name>.pdb."""
    by_id = {job.job_id: job for job in jobs}
    saved: set[str] = set()
    used_names: set[str] = set()
    interval = 1.0
    with Live(_job_table(jobs), console=err, refresh_per_second=4, transient=quiet) as live:
        while True:
            pending = [i for i, job in by_id.items() if job.status not in TERMINAL_STATUSES]
            if pending:
                listed = client._send(_newest_jobs()).json()["jobs"]
                fresh = {item["job_id"] for item in listed}
                for item in listed:
                    if item["job_id"] in by_id and by_id[item["job_id"]].status != item["status"]:
                        by_id[item["job_id"]] = client.jobs.get(item["job_id"])
                for job_id in pending:
                    if job_id not in fresh:  # older than the newest page: ask for it alone
                        by_id[job_id] = client.jobs.get(job_id)
            for job in by_id.values():
                if output is not None and job.status == "completed" and job.job_id not in saved:
                    filename = _unique(safe_filename(job.name), used_names) + ".pdb"
                    client.jobs.download(job.job_id, output / filename)
                    saved.add(job.job_id)
            live.update(_job_table(list(by_id.values())))
            if all(job.status in TERMINAL_STATUSES for job in by_id.values()):
                return list(by_id.values())
            time.sleep(interval)
            interval = min(interval * 1.3, 5.0)


def _newest_jobs() -> Any:
    from phonos import _calls

    return _calls.Call("GET", "/v1/jobs", params={"limit": LIST_PAGE})


def _unique(stem: str, used: set[str]) -> str:
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}"
    used.add(candidate)
    return candidate


@main.group()
def jobs() -> None:
    """List, inspect, cancel, delete, download and watch jobs."""


@jobs.command("list")
@click.option("--status")
@click.option("--model")
@click.option("--search")
@click.option("--limit", default=50, show_default=True, help="at most this many jobs")
@pass_context
def jobs_list(
    ctx: Context, status: str | None, model: str | None, search: str | None, limit: int
) -> None:
    found: list[Job] = []
    for job in ctx.client.jobs.list(status=status, model=model, search=search):
        found.append(job)
        if len(found) >= limit:
            break
    ctx.emit([job.raw for job in found], _job_table(found))


@jobs.command("show")
@click.argument("job_id")
@pass_context
def jobs_show(ctx: Context, job_id: str) -> None:
    job = ctx.client.jobs.get(job_id)
    table = Table("field", "value", show_header=False)
    for key, value in job.raw.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    ctx.emit(job.raw, table)
    sys.exit(1 if job.status in ("failed", "cancelled") else 0)


@jobs.command("cancel")
@click.argument("job_id")
@pass_context
def jobs_cancel(ctx: Context, job_id: str) -> None:
    job = ctx.client.jobs.cancel(job_id)
    ctx.emit(job.raw, f"{job.job_id} {job.status}")


@jobs.command("delete")
@click.argument("job_id")
@pass_context
def jobs_delete(ctx: Context, job_id: str) -> None:
    result = ctx.client.jobs.delete(job_id)
    ctx.emit(result, f"{job_id} deleted")


@jobs.command("download")
@click.argument("job_id")
@click.option("-o", "--output", default=".", help="a file or a directory")
@pass_context
def jobs_download(ctx: Context, job_id: str, output: str) -> None:
    path = ctx.client.jobs.download(job_id, output)
    ctx.emit({"job_id": job_id, "path": str(path)}, str(path))


@jobs.command("watch")
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="seconds")
@pass_context
def jobs_watch(ctx: Context, job_id: str, timeout: float | None) -> None:
    """Follow a job's progress until it ends."""
    job = ctx.client.jobs.wait(job_id, timeout=timeout, progress=not ctx.as_json)
    ctx.emit(job.raw, f"{job.job_id} {job.status}" + (f": {job.error}" if job.error else ""))
    sys.exit(0 if job.status == "completed" else 1)


@main.command()
@pass_context
def models(ctx: Context) -> None:
    """The models, their prices and limits."""
    found = ctx.client.models()
    table = Table("id", "name", "type", "credits", "max length", "available")
    for model in found:
        available = "" if model.available is None else ("yes" if model.available else "no")
        table.add_row(
            model.id, model.name, model.type, str(model.cost_credits),
            str(model.max_sequence_length), available,
        )  # fmt: skip
    ctx.emit([model.raw for model in found], table)


@main.command()
@pass_context
def account(ctx: Context) -> None:
    """The account, its balance and job counts."""
    overview = ctx.client.account()
    info, jobs_count = overview.account or {}, overview.jobs or {}
    text = (
        f"{info.get('username')} <{info.get('email')}>  balance: {overview.balance} credits\n"
        + "  ".join(f"{key}: {value}" for key, value in jobs_count.items())
    )
    ctx.emit(overview.raw, text)


@main.command()
@click.option("--days", default=30, show_default=True)
@pass_context
def usage(ctx: Context, days: int) -> None:
    """Requests and credits over the last DAYS days."""
    report = ctx.client.usage(days)
    table = Table("day", "requests", "credits")
    for day in report.daily or []:
        table.add_row(str(day.get("date")), str(day.get("requests")), str(day.get("credits_used")))
    ctx.emit(report.raw, table)


@main.group()
def webhooks() -> None:
    """Manage webhook endpoints."""


@webhooks.command("list")
@pass_context
def webhooks_list(ctx: Context) -> None:
    found = ctx.client.webhooks.list()
    table = Table("id", "url", "events", "enabled")
    for hook in found:
        table.add_row(hook.webhook_id, hook.url, ",".join(hook.events or []), str(hook.enabled))
    ctx.emit([hook.raw for hook in found], table)


@webhooks.command("create")
@click.argument("url")
@click.option("--event", "events", multiple=True, help="an event to send (repeat); default all")
@pass_context
def webhooks_create(ctx: Context, url: str, events: tuple[str, ...]) -> None:
    hook = ctx.client.webhooks.create(url, list(events) or None)
    ctx.emit(hook.raw, f"{hook.webhook_id}\nsigning secret (shown once): {hook.secret}")


@webhooks.command("delete")
@click.argument("webhook_id")
@pass_context
def webhooks_delete(ctx: Context, webhook_id: str) -> None:
    ctx.emit(ctx.client.webhooks.delete(webhook_id), f"{webhook_id} deleted")


@webhooks.command("test")
@click.argument("webhook_id")
@pass_context
def webhooks_test(ctx: Context, webhook_id: str) -> None:
    result = ctx.client.webhooks.test(webhook_id)
    ctx.emit(result, str(result.get("message", result)))
