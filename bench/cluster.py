"""A cluster on one machine, as production runs it, and two failures while it works.

Starts two API servers (gunicorn, `phonos.wsgi`) on two ports behind a client that spreads
requests over both, three Celery workers (two on `esmfold`, one on `light`), one beat, real
PostgreSQL, Redis and SeaweedFS (S3), and the tiny ESMFold checkpoint. It submits N ESMFold jobs
(each with an Idempotency-Key, so a submission retried on the other server after a failure is
one job) and, while they run, SIGKILLs one API server (it stays down) and one esmfold worker
(restarted a second later, as a supervisor would).

Checks: every job completed exactly once (one `completed` event each), the ledger reconciles
(`reconcile_ledger`), the local webhook receiver got exactly one `job.completed` per job, and
`phonos_queue_depth{queue="esmfold"}`, sampled from /metrics through the run, drains to zero.
Prints the figures (docs/reliability.md, "Cluster run") and exits 1 if a check fails.

    .venv/bin/python bench/cluster.py                  # 200 jobs
    .venv/bin/python bench/cluster.py --jobs 30 --json /tmp/cluster.json

It uses its own database (`<DATABASE_URL's name>_cluster`, dropped and re-created) and the
Redis database of REDIS_URL (flushed before and after); defaults: `phonos` and Redis DB 12.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import redis
import requests

# Run as a script, Python puts bench/ on the path, not the repository that holds it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.processes import (
    S3_ACCESS_KEY,
    S3_PORT,
    S3_SECRET_KEY,
    celery_worker_command,
    free_port,
    kill_group,
    s3_is_up,
    seaweedfs_command,
    wait_until,
)
from bench.processes import stop as stop_process

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SEQUENCE = "MGSSHHHHHHSSGLVPRGSHMASMTGGQQMGRGS"
METRICS_TOKEN = "cluster-metrics-token"
UNLIMITED = 1_000_000_000


def log(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


# --- Processes -----------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self) -> "Process":
        self.popen = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=ROOT,
            stdout=self.log_path.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill_hard(self) -> None:
        """SIGKILL the whole process group: a lost node or an OOM kill, no clean-up."""
        assert self.popen is not None
        kill_group(self.popen)

    def stop(self) -> None:
        if self.popen is not None:
            stop_process(self.popen, timeout=20, group=True)


def wait_for(predicate, what: str, timeout: float = 90) -> Any:
    return wait_until(predicate, what, timeout=timeout, interval=0.2)


def seaweedfs_start(workdir: Path) -> Process | None:
    """Reuse the SeaweedFS on :8333 if one runs (the test suite's), else start one."""
    if s3_is_up():
        return None
    process = Process(
        "seaweedfs", seaweedfs_command(workdir), dict(os.environ), workdir / "weed.log"
    ).start()
    wait_for(s3_is_up, "SeaweedFS")
    return process


# --- The webhook receiver ------------------------------------------------------------------------


class Receiver:
    """Counts deliveries per (job, event) and remembers each delivery's X-Request-ID."""

    def __init__(self) -> None:
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self.request_ids: dict[str, str] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                job_id = body["data"]["job_id"]
                with receiver.lock:
                    receiver.deliveries[(job_id, body["event"])] += 1
                    receiver.request_ids[job_id] = self.headers.get("X-Request-ID", "")
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def completed(self) -> Counter[str]:
        with self.lock:
            return Counter(
                {job: n for (job, event), n in self.deliveries.items() if event == "job.completed"}
            )


# --- The client that spreads requests over both API servers --------------------------------------


class SpreadingClient:
    """Round-robin over the API ports; a request whose server does not answer, or dies while
    answering (the headers sent, the body cut off), is sent to the next one (a POST keeps its
    Idempotency-Key, so it still makes one job)."""

    def __init__(self, ports: list[int], key: str) -> None:
        self.ports = ports
        self.key = key
        self.turn = 0
        self.lock = threading.Lock()
        self.failovers = 0

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        with self.lock:
            self.turn += 1
            start = self.turn
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        last_error: Exception | None = None
        for offset in range(len(self.ports) * 2):
            port = self.ports[(start + offset) % len(self.ports)]
            try:
                return requests.request(
                    method,
                    f"http://127.0.0.1:{port}{path}",
                    headers=headers,
                    timeout=30,
                    **kwargs,
                )
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
                last_error = error
                with self.lock:
                    self.failovers += 1
        raise RuntimeError(f"no API server answered {method} {path}: {last_error}")


# --- The run -------------------------------------------------------------------------------------


@dataclass
class Report:
    jobs: int
    completed: int = 0
    failed: int = 0
    other: int = 0
    duplicate_completions: int = 0
    jobs_run_more_than_once: int = 0
    webhooks_missing: int = 0
    webhooks_duplicated: int = 0
    webhooks_with_request_id: int = 0
    ledger: str = ""
    ledger_clean: bool = False
    submit_seconds: float = 0.0
    drain_seconds: float = 0.0
    throughput_jobs_per_second: float = 0.0
    submit_p50_ms: float = 0.0
    submit_p95_ms: float = 0.0
    queue_p50_s: float = 0.0
    queue_p95_s: float = 0.0
    run_p50_s: float = 0.0
    run_p95_s: float = 0.0
    api_failovers: int = 0
    api_killed_at_s: float = 0.0
    worker_killed_at_s: float = 0.0
    worker_restarted_at_s: float = 0.0
    queue_depth_max: float = 0.0
    queue_depth_final: float = -1.0
    queue_depth_samples: list[tuple[float, float]] = field(default_factory=list)
    metrics_jobs_completed: float = 0.0
    failures: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.completed != self.jobs:
            self.failures.append(f"{self.completed} of {self.jobs} jobs completed")
        if self.duplicate_completions:
            self.failures.append(f"{self.duplicate_completions} jobs completed more than once")
        if not self.ledger_clean:
            self.failures.append(f"reconcile_ledger: {self.ledger}")
        if self.webhooks_missing or self.webhooks_duplicated:
            self.failures.append(
                f"webhooks: {self.webhooks_missing} missing, {self.webhooks_duplicated} duplicated"
            )
        if self.queue_depth_final != 0 or self.queue_depth_max <= 0:
            self.failures.append(
                f"queue depth did not drain (max {self.queue_depth_max}, "
                f"final {self.queue_depth_final})"
            )


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def metrics_sample(client: SpreadingClient) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = client.request("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    samples = {}
    for family in text_string_to_metric_families(text.text):
        for sample in family.samples:
            if sample.name == "phonos_queue_depth" and sample.labels["queue"] == "esmfold":
                samples["depth"] = sample.value
            if sample.name == "phonos_jobs_total" and sample.labels == {
                "model": "esmfold",
                "status": "completed",
            }:
                samples["completed"] = sample.value
    return samples


def run_cluster(*, jobs: int, database_url: str, redis_url: str, workdir: Path) -> Report:
    report = Report(jobs=jobs)
    parsed = urlparse(database_url)
    database = f"{parsed.path.lstrip('/') or 'phonos'}_cluster"
    admin_dsn = parsed._replace(path="/postgres").geturl()
    cluster_url = parsed._replace(path=f"/{database}").geturl()
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{database}"')
    redis.Redis.from_url(redis_url).flushdb()

    processes: list[Process] = []
    receiver = Receiver()
    bucket = f"phonos-cluster-{uuid.uuid4().hex[:8]}"
    try:
        weed = seaweedfs_start(workdir)
        if weed is not None:
            processes.append(weed)
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{S3_PORT}",
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
        )

        def bucket_created() -> bool:
            try:
                s3.create_bucket(Bucket=bucket)
            except Exception:  # the filer may still be joining the cluster right after start
                return False
            return True

        wait_for(bucket_created, "the S3 bucket", timeout=30)

        from workers.checkpoints import write_tiny_esmfold

        weights = write_tiny_esmfold(workdir / "tiny-esmfold")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "phonos.settings",
            "PHONOS_ENV": "development",
            "PHONOS_VAR_DIR": str(workdir / "var"),
            "DATABASE_URL": cluster_url,
            "REDIS_URL": redis_url,
            "PHONOS_S3_BUCKET": bucket,
            "PHONOS_S3_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "PHONOS_ESMFOLD_WEIGHTS": str(weights),
            "PHONOS_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",
            "PHONOS_LOG_FORMAT": "json",
            "PHONOS_METRICS_TOKEN": METRICS_TOKEN,
            "PHONOS_WEBHOOK_ALLOW_HTTP": "true",
            "PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "PHONOS_WEBHOOK_RETRY_SCHEDULE": "0.5,1,2,4,8,16,32",
            # A worker killed mid-job: its job's heartbeat goes stale after 10 s and the
            # sweeper (every 3 s) hands it to the other worker.
            "PHONOS_HEARTBEAT_SECONDS": "2",
            "PHONOS_STALE_AFTER_SECONDS": "10",
            "PHONOS_SWEEP_INTERVAL_SECONDS": "3",
        }
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"], env=env, cwd=ROOT, check=True
        )
        setup = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", ACCOUNT_SETUP],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        key = json.loads(setup.stdout.split("CLUSTER_SETUP ", 1)[1])["api_key"]

        ports = [free_port(), free_port()]
        apis = [
            Process(
                f"api{index}",
                [
                    str(BIN / "gunicorn"),
                    "phonos.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--worker-class",
                    "gthread",
                ],
                env,
                workdir / f"api{index}.log",
            )
            for index, port in enumerate(ports)
        ]

        def celery_worker(name: str, queue: str, concurrency: int) -> Process:
            command = celery_worker_command(
                queue, name=f"{name}@%h", concurrency=concurrency, loglevel=None
            )
            return Process(name, command, env, workdir / f"{name}.log")

        workers = [
            celery_worker("esmfold1", "esmfold", 1),
            celery_worker("esmfold2", "esmfold", 1),
            celery_worker("light1", "light", 2),
        ]
        beat = Process(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "phonos",
                "beat",
                "--schedule",
                str(workdir / "beat-schedule"),
            ],
            env,
            workdir / "beat.log",
        )
        for process in [*apis, *workers, beat]:
            processes.append(process.start())
        for api, port in zip(apis, ports, strict=True):
            wait_for(lambda port=port: _answers(port), f"{api.name} on :{port}")
        for worker in workers:
            wait_for(lambda worker=worker: "ready." in worker.log(), f"{worker.name} ready")
        log(f"cluster up: API on {ports}, workers {[w.name for w in workers]}, beat")

        client = SpreadingClient(ports, key)
        response = client.request("POST", "/v1/webhooks", json={"url": receiver.url})
        assert response.status_code == 201, response.text

        started = time.monotonic()
        samples: list[tuple[float, float]] = []
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.is_set():
                try:
                    figures = metrics_sample(client)
                    samples.append((round(time.monotonic() - started, 1), figures["depth"]))
                except Exception as error:  # a sample lost during the API kill is just skipped
                    log(f"metrics sample failed: {error}")
                stop_sampling.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        submit_ms: list[float] = []
        submitted = Counter[str]()

        def submit(index: int) -> str:
            began = time.perf_counter()
            response = client.request(
                "POST",
                "/v1/predict",
                json={
                    "model": "esmfold",
                    "sequence": SEQUENCE,
                    "name": f"cluster-{index}",
                    # Every job a run of its own: the point is the workers, not result reuse.
                    "params": {"cache": False},
                },
                headers={"Idempotency-Key": f"cluster-{index}"},
            )
            assert response.status_code == 200, response.text
            submit_ms.append((time.perf_counter() - began) * 1000)
            submitted["done"] += 1
            return response.json()["job_id"]

        def kill_api_midway() -> None:
            wait_for(lambda: submitted["done"] >= jobs * 0.4, "40% submitted", timeout=600)
            apis[1].kill_hard()
            report.api_killed_at_s = round(time.monotonic() - started, 1)
            log(f"SIGKILLed {apis[1].name} at {report.api_killed_at_s}s")

        killer = threading.Thread(target=kill_api_midway, daemon=True)
        killer.start()
        with ThreadPoolExecutor(max_workers=8) as pool:
            job_ids = list(pool.map(submit, range(jobs)))
        report.submit_seconds = round(time.monotonic() - started, 1)
        killer.join(timeout=60)
        log(f"{jobs} jobs submitted in {report.submit_seconds}s")

        with psycopg.connect(cluster_url, autocommit=True) as db:

            def completed_count() -> int:
                return db.execute(
                    "SELECT count(*) FROM jobs_job WHERE status IN ('completed', 'failed')"
                ).fetchone()[0]

            # Kill an esmfold worker once a fifth of the jobs are done, with jobs still queued.
            wait_for(lambda: completed_count() >= jobs * 0.2, "20% done", timeout=1800)
            workers[0].kill_hard()
            report.worker_killed_at_s = round(time.monotonic() - started, 1)
            log(f"SIGKILLed {workers[0].name} at {report.worker_killed_at_s}s")
            time.sleep(1)
            workers[0].start()
            report.worker_restarted_at_s = round(time.monotonic() - started, 1)

            wait_for(lambda: completed_count() >= jobs, "every job to finish", timeout=3600)
            report.drain_seconds = round(time.monotonic() - started, 1)
            report.throughput_jobs_per_second = round(jobs / report.drain_seconds, 2)
            wait_for(
                lambda: sum(receiver.completed().values()) >= jobs,
                "every webhook",
                timeout=120,
            )
            # Room for a late duplicate to show itself, and for the sampler to see zero.
            time.sleep(3)
            stop_sampling.set()
            sampler.join(timeout=10)

            statuses = dict(
                db.execute("SELECT status, count(*) FROM jobs_job GROUP BY status").fetchall()
            )
            report.completed = statuses.get("completed", 0)
            report.failed = statuses.get("failed", 0)
            report.other = sum(statuses.values()) - report.completed - report.failed
            report.duplicate_completions = db.execute(
                "SELECT count(*) FROM (SELECT job_id FROM jobs_jobevent WHERE status = 'completed'"
                " GROUP BY job_id HAVING count(*) > 1) AS twice"
            ).fetchone()[0]
            report.jobs_run_more_than_once = db.execute(
                "SELECT count(*) FROM jobs_job WHERE attempts > 1"
            ).fetchone()[0]
            timings = db.execute(
                "SELECT extract(epoch FROM started_at - created_at),"
                " extract(epoch FROM finished_at - started_at)"
                " FROM jobs_job WHERE status = 'completed'"
            ).fetchall()
        queue_seconds = [float(row[0]) for row in timings]
        run_seconds = [float(row[1]) for row in timings]
        report.queue_p50_s = round(statistics.median(queue_seconds), 2)
        report.queue_p95_s = round(percentile(queue_seconds, 0.95), 2)
        report.run_p50_s = round(statistics.median(run_seconds), 2)
        report.run_p95_s = round(percentile(run_seconds, 0.95), 2)
        report.submit_p50_ms = round(statistics.median(submit_ms), 1)
        report.submit_p95_ms = round(percentile(submit_ms, 0.95), 1)
        report.api_failovers = client.failovers

        delivered = receiver.completed()
        report.webhooks_missing = sum(1 for job_id in set(job_ids) if delivered[job_id] == 0)
        report.webhooks_duplicated = sum(1 for n in delivered.values() if n > 1)
        report.webhooks_with_request_id = sum(1 for rid in receiver.request_ids.values() if rid)

        ledger = subprocess.run(
            [sys.executable, "manage.py", "reconcile_ledger"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        report.ledger = (ledger.stdout + ledger.stderr).strip()
        report.ledger_clean = ledger.returncode == 0

        report.queue_depth_samples = samples
        report.queue_depth_max = max((depth for _, depth in samples), default=0.0)
        report.queue_depth_final = samples[-1][1] if samples else -1.0
        report.metrics_jobs_completed = metrics_sample(client).get("completed", 0.0)
        report.check()
        return report
    finally:
        for process in reversed(processes):
            process.stop()
        receiver.server.shutdown()
        redis.Redis.from_url(redis_url).flushdb()


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/v1/health/live", timeout=2).ok
    except requests.RequestException:
        return False


ACCOUNT_SETUP = f"""
import json
from apps.accounts.models import Account
from apps.accounts.services import api_key_create
from apps.billing.services import account_open
account = account_open(username="cluster", email="cluster@example.invalid", credits={UNLIMITED})
Account.objects.filter(id=account.id).update(
    max_active_jobs={UNLIMITED}, max_key_rate_limit={UNLIMITED}
)
account.refresh_from_db()
created = api_key_create(account=account, name="cluster", rate_limit_per_minute={UNLIMITED})
print("CLUSTER_SETUP " + json.dumps({{"api_key": created.raw_key}}))
"""


def print_report(report: Report) -> None:
    step = max(1, len(report.queue_depth_samples) // 15)
    depth = " ".join(f"{t:g}s:{d:g}" for t, d in report.queue_depth_samples[::step])
    lines = [
        f"jobs                      {report.jobs}",
        f"completed / failed / other {report.completed} / {report.failed} / {report.other}",
        f"completed more than once  {report.duplicate_completions}",
        f"jobs run again after kill {report.jobs_run_more_than_once}",
        f"webhooks missing / dup    {report.webhooks_missing} / {report.webhooks_duplicated}"
        f"  (with X-Request-ID: {report.webhooks_with_request_id})",
        f"reconcile_ledger          {report.ledger}",
        f"submitted in              {report.submit_seconds} s"
        f"  (p50 {report.submit_p50_ms} ms, p95 {report.submit_p95_ms} ms per POST)",
        f"all done in               {report.drain_seconds} s"
        f"  ({report.throughput_jobs_per_second} jobs/s)",
        f"queue wait p50 / p95      {report.queue_p50_s} / {report.queue_p95_s} s",
        f"run time p50 / p95        {report.run_p50_s} / {report.run_p95_s} s",
        f"API killed at             {report.api_killed_at_s} s"
        f"  ({report.api_failovers} requests failed over to the other API)",
        f"worker killed / restarted {report.worker_killed_at_s} / {report.worker_restarted_at_s} s",
        f"queue depth max / final   {report.queue_depth_max:g} / {report.queue_depth_final:g}",
        f"queue depth over time     {depth}",
        f"metrics jobs completed    {report.metrics_jobs_completed:g}",
        "RESULT                    "
        + ("OK" if not report.failures else "FAILED: " + "; ".join(report.failures)),
    ]
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/phonos"),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/12")
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="phonos-cluster-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "phonos.settings")
    report = run_cluster(
        jobs=args.jobs, database_url=args.database_url, redis_url=args.redis_url, workdir=workdir
    )
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    log(f"process logs in {workdir}")
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
