"""API load benchmark (not a test): Phonos under gunicorn on PostgreSQL and Redis, driven by wrk.

Measures GET /v1/jobs/{id}, POST /v1/predict and a bare Django JSON view in one run, so the API
endpoints can be read as ratios of the bare view on the same machine at the same moment; and
GET /v1/jobs/{id} again on a second server without the usage middleware, for what recording
usage costs per request.

Everything stays on loopback and in its own stores: the database `phonos_bench` (dropped and
re-created on each run) and Redis DB 11 (cache, rate limits and the Celery broker; flushed before
and after, which purges the tasks that predict enqueues; no worker runs). Two gunicorn servers
run side by side (full and no-usage) so the two variants alternate round by round; only one is
under load at a time.

CPU per request is read from /proc: the gunicorn workers, this database's PostgreSQL backends,
redis-server (shared), and the client (wrk plus this script); "other" is the rest of the
machine's busy time in the same interval: PostgreSQL's WAL writer, the kernel, and anything else
running on the box, such as other engineers' test suites. On a shared machine each run first
waits (up to --quiet-wait seconds) for such work to stop, and the table shows how much of it
there was during the run, in cores.

The configuration (gunicorn gthread 2 x 4, wrk with 8 connections, a new one per request) and
the reasons for it are in docs/benchmarks.md.

--baseline DIR measures another checkout of Phonos (an older commit, e.g. from `git worktree
add`) alongside this one, since the VM's speed drifts too much between minutes for two separate
runs to compare: DIR gets stores of its own (`<database>_base`, Redis DB + 1), its own servers,
account and jobs, and every scenario runs on both trees back to back, in alternating order from
round to round. Both trees run with this tree's .venv, in DIR, so that DIR's code is the one
imported; the script checks that each server, `migrate` and `shell` did.

    bench/api_load                      # 3 rounds x 6 scenarios x (2 s warm-up + 10 s)
    bench/api_load --rounds 1 --duration 5 --json /tmp/api_load.json
    bench/api_load --baseline /work/base   # the same, on both trees, plus a comparison
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.processes import free_port, wait_until, wait_until_serving
from bench.processes import stop as stop_process

# This checkout: its .venv runs every tree (a --baseline one may have none) and its wrk script
# drives them all.
HERE = Path(__file__).resolve().parent.parent
PYTHON = HERE / ".venv" / "bin" / "python"
GUNICORN = HERE / ".venv" / "bin" / "gunicorn"
WRK_SCRIPT = HERE / "bench" / "wrk.lua"

PG = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
# Its own stores, so a run never touches another's: BENCH_DATABASE / BENCH_REDIS_DB (or
# --database / --redis-db) move them, e.g. when test suites on the same box use DB 11.
DEFAULT_DATABASE = os.environ.get("BENCH_DATABASE", "phonos_bench")
DEFAULT_REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "11"))

PREDICT_BODY = json.dumps(
    {"model": "esmfold", "sequence": "MGSSHHHHHHSSGLVPRGSHMASMTGGQQMGRGS", "name": "bench"}
)
# Large enough that neither credits, the per-key rate limit, the per-account active-job limit
# nor the global queue capacity refuses a request during the run (PositiveIntegerField fits).
UNLIMITED = 1_000_000_000
LISTED_JOBS = 50

ACCOUNT_SETUP = f"""
import json
import apps
from apps.accounts.models import Account
from apps.accounts.services import api_key_create
from apps.billing.services import account_open
account = account_open(username="bench", email="bench@example.invalid", credits={UNLIMITED})
Account.objects.filter(id=account.id).update(max_active_jobs={UNLIMITED}, max_key_rate_limit={UNLIMITED})
created = api_key_create(account=account, name="bench", rate_limit_per_minute={UNLIMITED})
# A second tenant whose jobs the GET scenarios read: its job count stays put while predict
# piles jobs onto the first, so every round lists the same 50.
reader = account_open(username="reader", email="reader@example.invalid", credits={UNLIMITED})
Account.objects.filter(id=reader.id).update(max_active_jobs={UNLIMITED}, max_key_rate_limit={UNLIMITED})
reading = api_key_create(account=reader, name="reader", rate_limit_per_minute={UNLIMITED})
# Where this shell imported Phonos from: bench/api_load checks that it is the tree's own.
code = apps.__file__.rsplit("/", 2)[0]
print("BENCH_SETUP " + json.dumps({{"api_key": created.raw_key, "reader_key": reading.raw_key, "code": code}}))
"""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
QUIET_BUSY = 0.15
# A run during which other work used more than this many cores is measured again (--retries).
CONTAMINATED_CORES = 0.25

# Each gunicorn worker logs where it imported Phonos from, once its application is loaded, so
# that a tree's servers are known to serve that tree's code and not the one the .venv's
# editable install points at.
GUNICORN_CONFIG = """
import sys
from pathlib import Path


def post_worker_init(worker):
    packages = ("phonos", "apps", "bench")
    roots = {str(Path(sys.modules[name].__file__).resolve().parents[1]) for name in packages}
    worker.log.warning("BENCH_CODE %s", " ".join(sorted(roots)))
"""


@dataclass(frozen=True)
class Tree:
    """A checkout of Phonos under measurement and the stores it runs on: this one ("current"),
    or the one --baseline names ("baseline")."""

    name: str
    root: Path
    database: str
    redis_db: int
    # --embedded: the quick-start default, SQLite in the run's directory and no Redis at all.
    embedded: bool = False

    def database_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:5432/{self.database}"

    def redis_url(self) -> str:
        return f"redis://127.0.0.1:6379/{self.redis_db}"

    def redis(self, command: list[str]) -> str:
        return redis(self.redis_db, command)

    def environment(self, settings_module: str, var_dir: Path) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "PHONOS_ENV": "development",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": "" if self.embedded else self.database_url(),
            "REDIS_URL": "" if self.embedded else self.redis_url(),
            "PHONOS_VAR_DIR": str(var_dir),
            "PHONOS_QUEUE_CAPACITY": str(UNLIMITED),
        }

    def check_code(self, imported_from: str, what: str) -> None:
        """Fails unless `what` imported Phonos from this tree."""
        if Path(imported_from).resolve() != self.root:
            raise RuntimeError(
                f"{what} for the {self.name} tree imported Phonos from {imported_from}, "
                f"not {self.root}"
            )


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str  # "full" or "no_usage"
    method: str
    path: str
    body: str = ""
    authenticated: bool = True
    reader: bool = False  # authenticates as the reading tenant
    cache_control: str = ""  # sent as Cache-Control when set


@dataclass
class Measurement:
    scenario: str
    round: int
    requests: int
    seconds: float
    rps: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    usage_rows_per_request: float
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    # The busiest gunicorn process's part of the gunicorn CPU: 1/workers when balanced.
    busiest_worker_share: float = 0.0
    # CPU that the rest of the machine used during the run, in cores (0.5 = half a core).
    other_cores: float = 0.0


def log(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, text=True, capture_output=True, **kwargs)


def preflight() -> None:
    if shutil.which("wrk") is None:
        sys.exit(
            "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu) or "
            "`brew install wrk` (macOS), then run bench/api_load again."
        )
    for tool, hint in (("psql", "postgresql-client"), ("redis-cli", "redis-tools")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: `apt-get install -y {hint}`")
    if subprocess.run(["pg_isready", "-q", *PG]).returncode != 0:
        sys.exit("PostgreSQL is not answering on 127.0.0.1:5432 (scripts/test starts it)")
    if redis(0, ["PING"]) != "PONG":
        sys.exit("Redis is not answering on 127.0.0.1:6379 (scripts/test starts it)")


def psql(sql: str, database: str = "postgres") -> str:
    return run(["psql", *PG, "-d", database, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql]).stdout


def redis(db: int, command: list[str]) -> str:
    command = ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "-n", str(db), *command]
    return run(command).stdout.strip()


def prepare_stores(tree: Tree, var_dir: Path) -> dict[str, str]:
    """A fresh bench database and an empty Redis DB, migrated and set up by the tree's own
    manage.py; returns the two bench API keys."""
    if tree.embedded:
        log(f"SQLite in {var_dir}, no Redis")
    else:
        log(f"re-creating database {tree.database} and flushing Redis DB {tree.redis_db}")
        psql(f"DROP DATABASE IF EXISTS {tree.database} WITH (FORCE)")
        psql(f"CREATE DATABASE {tree.database}")
        tree.redis(["FLUSHDB"])
    var_dir.mkdir(exist_ok=True)
    environment = tree.environment("bench.settings", var_dir)
    manage = str(tree.root / "manage.py")
    run([str(PYTHON), manage, "migrate", "--noinput", "-v", "0"], cwd=tree.root, env=environment)
    if not tree.embedded:
        check_migrations(tree)
    output = run(
        [str(PYTHON), manage, "shell", "-c", ACCOUNT_SETUP], cwd=tree.root, env=environment
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH_SETUP "))
    setup: dict[str, str] = json.loads(line.removeprefix("BENCH_SETUP "))
    tree.check_code(setup.pop("code"), "manage.py shell")
    return setup


def check_migrations(tree: Tree) -> None:
    """Fails unless the database holds exactly the tree's own migrations of its apps: proof
    that `migrate` ran the tree's code (trees at different commits differ in migrations)."""
    on_disk = {
        f"{path.parent.parent.name}.{path.stem}"
        for path in tree.root.glob("apps/*/migrations/[0-9]*.py")
    }
    labels = sorted({name.split(".")[0] for name in on_disk})
    applied = set(
        psql(
            "SELECT app || '.' || name FROM django_migrations WHERE app IN ("
            + ", ".join(f"'{label}'" for label in labels)
            + ")",
            tree.database,
        ).split()
    )
    if applied != on_disk:
        raise RuntimeError(
            f"manage.py migrate for the {tree.name} tree applied {sorted(applied)}, "
            f"but {tree.root} has {sorted(on_disk)}"
        )


class Server:
    """One gunicorn serving Phonos with the given settings module, on a free loopback port."""

    def __init__(
        self, tree: Tree, name: str, settings_module: str, var_dir: Path, args: argparse.Namespace
    ) -> None:
        self.tree = tree
        self.name = name
        self.workers = args.workers
        self.port = free_port()
        self.log_path = var_dir / f"gunicorn-{name}.log"
        config = var_dir / "gunicorn_config.py"
        config.write_text(GUNICORN_CONFIG)
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                str(GUNICORN),
                "phonos.wsgi:application",
                f"--config={config}",
                f"--bind=127.0.0.1:{self.port}",
                f"--worker-class={args.worker_class}",
                f"--workers={args.workers}",
                f"--threads={args.threads}",
                "--log-level=warning",
                "--graceful-timeout=5",
            ],
            cwd=tree.root,
            env=tree.environment(settings_module, var_dir),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until_serving(
            f"{self.base_url}/bench/bare",
            self.process,
            self.log_path,
            timeout=timeout,
            what=f"gunicorn ({self.name})",
        )
        # Each worker logs where it imported Phonos from (GUNICORN_CONFIG) before it serves.
        wait_until(
            lambda: len(self._code_roots()) >= self.workers,
            lambda: (
                f"gunicorn ({self.name}) workers to log BENCH_CODE:\n" + self.log_path.read_text()
            ),
            timeout=timeout,
        )
        for root in self._code_roots():
            self.tree.check_code(root, f"gunicorn ({self.name})")

    def _code_roots(self) -> list[str]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line.split("BENCH_CODE ", 1)[1] for line in lines if "BENCH_CODE " in line]

    def stop(self) -> None:
        stop_process(self.process, timeout=15)
        self._log.close()


class CpuSampler:
    """CPU seconds of the processes that serve the benchmark, grouped, read from /proc.

    Sampled over and over while a run goes on, so that a process that exits mid-run (a database
    connection that reached CONN_MAX_AGE) still counts up to its last sample, and one born
    mid-run counts from zero.
    """

    def __init__(self, gunicorn_master: int, database: str) -> None:
        self.gunicorn_master = gunicorn_master
        self.database = database
        self.start: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}

    def _scan(self) -> dict[int, tuple[str, float]]:
        found = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            pid = int(proc.name)
            try:
                stat = (proc / "stat").read_text()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat.rsplit(")", 1)[1].split()
                if pid == self.gunicorn_master or int(fields[1]) == self.gunicorn_master:
                    group = "gunicorn"
                elif comm == "redis-server":
                    group = "redis"
                elif comm == "postgres" and self.database in command_words(proc):
                    group = "postgres"
                else:
                    continue
            except (OSError, ValueError):
                continue  # the process exited while being read
            found[pid] = (group, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
        return found

    def begin(self) -> None:
        self.last = self._scan()
        self.start = {pid: seconds for pid, (_, seconds) in self.last.items()}

    def sample(self) -> None:
        self.last.update(self._scan())

    def used(self, group: str) -> dict[int, float]:
        return {
            pid: seconds - self.start.get(pid, 0.0)
            for pid, (owner, seconds) in self.last.items()
            if owner == group
        }


def command_words(proc: Path) -> list[str]:
    """A process's command line, word by word. A PostgreSQL backend's is its title, "postgres:
    [cluster:] user database host state": whole words, so that the database phonos_bench is
    not phonos_bench_base, nor the other way round."""
    return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()


def client_cpu_seconds() -> float:
    """This script's CPU plus that of its reaped children (wrk)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine_busy_seconds() -> float:
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def wait_for_quiet_machine(max_wait: float) -> float:
    """On a shared box other work skews every figure: wait, up to max_wait seconds, until the
    machine is at most QUIET_BUSY busy. Returns the busy fraction last seen."""
    deadline = time.monotonic() + max_wait
    while True:
        start = machine_busy_seconds()
        time.sleep(1)
        busy = (machine_busy_seconds() - start) / (os.cpu_count() or 1)
        if busy <= QUIET_BUSY or time.monotonic() >= deadline:
            return busy


def usage_row_count(tree: Tree) -> int:
    """Rows in the usage tables: one per request when each request inserts its own."""
    if tree.embedded:
        return 0  # not counted in SQLite
    tables = psql(
        "SELECT string_agg(format('(SELECT count(*) FROM %I)', tablename), ' + ') "
        "FROM pg_tables WHERE tablename LIKE 'usage\\_%'",
        tree.database,
    ).strip()
    return int(psql(f"SELECT {tables}", tree.database)) if tables else 0


def api(server: Server, method: str, path: str, api_key: str, body: str = "") -> Any:
    request = urllib.request.Request(
        server.base_url + path,
        method=method,
        data=body.encode() if body else None,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as error:
        log_tail = "\n".join(server.log_path.read_text().splitlines()[-20:])
        raise RuntimeError(
            f"{method} {path} answered {error.code}: {error.read()[:500]!r}\n{log_tail}"
        ) from None


def wrk(
    server: Server, scenario: Scenario, api_key: str, seconds: int, args: argparse.Namespace
) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        "BENCH_CONNECTION_CLOSE": "0" if args.keep_alive else "1",
        "BENCH_METHOD": scenario.method,
        "BENCH_API_KEY": api_key if scenario.authenticated else "",
        "BENCH_BODY": scenario.body,
        "BENCH_CACHE_CONTROL": scenario.cache_control,
    }
    command = [
        "wrk",
        "--threads=1",
        f"--connections={args.connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        f"--script={WRK_SCRIPT}",
        server.base_url + scenario.path,
    ]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)


@dataclass
class Deployment:
    """A tree being served: its two gunicorn servers, its bench keys and its scenarios (the same
    in every tree but for the reader's job they read)."""

    tree: Tree
    servers: dict[str, Server]
    keys: dict[str, str]
    scenarios: list[Scenario]


def scenarios_reading(job_id: str) -> list[Scenario]:
    """The scenarios in the order each round runs them, the GETs reading the reader's `job_id`."""
    return [
        Scenario("bare", "full", "GET", "/bench/bare", authenticated=False),
        Scenario("GET /v1/jobs/{id}", "full", "GET", f"/v1/jobs/{job_id}", reader=True),
        Scenario(
            "GET /v1/jobs/{id} (no usage)",
            "no_usage",
            "GET",
            f"/v1/jobs/{job_id}",
            reader=True,
        ),
        Scenario(
            f"GET /v1/jobs?limit={LISTED_JOBS}",
            "full",
            "GET",
            f"/v1/jobs?limit={LISTED_JOBS}",
            reader=True,
        ),
        Scenario("POST /v1/predict", "full", "POST", "/v1/predict", body=PREDICT_BODY),
        # The same body with `Cache-Control: no-cache`: every request queues a job of its
        # own and publishes it to Celery, where the one above rides on the first job's run.
        Scenario(
            "POST /v1/predict (no-cache)",
            "full",
            "POST",
            "/v1/predict",
            body=PREDICT_BODY,
            cache_control="no-cache",
        ),
    ]


def deploy(tree: Tree, var_dir: Path, args: argparse.Namespace, cleanup: ExitStack) -> Deployment:
    """The tree's fresh stores, its two servers and the reader's jobs; `cleanup` stops the
    servers and then purges the tree's Redis DB."""
    keys = prepare_stores(tree, var_dir)
    if not tree.embedded:
        cleanup.callback(purge_redis, tree)
    log(
        f"starting gunicorn x2 ({args.workers} {args.worker_class} workers x "
        f"{args.threads} threads)"
    )
    servers: dict[str, Server] = {}
    for name, settings_module in (
        ("full", "bench.settings"),
        ("no_usage", "bench.settings_no_usage"),
    ):
        servers[name] = Server(tree, name, settings_module, var_dir, args)
        cleanup.callback(servers[name].stop)
    for server in servers.values():
        server.wait_ready()
    if args.baseline:
        log(f"{tree.name} tree: migrate, shell and gunicorn imported Phonos from {tree.root}")
    reader = keys["reader_key"]
    job_ids = [
        api(servers["full"], "POST", "/v1/predict", reader, PREDICT_BODY)["job_id"]
        for _ in range(LISTED_JOBS)
    ]
    job_id = job_ids[0]
    api(servers["full"], "GET", f"/v1/jobs/{job_id}", reader)
    listed = api(servers["full"], "GET", f"/v1/jobs?limit={LISTED_JOBS}", reader)["jobs"]
    assert len(listed) == LISTED_JOBS, listed
    return Deployment(tree, servers, keys, scenarios_reading(job_id))


def purge_redis(tree: Tree) -> None:
    queued = tree.redis(["DBSIZE"])
    tree.redis(["FLUSHDB"])
    log(f"gunicorn stopped; purged Redis DB {tree.redis_db} ({queued} keys, the Celery queues)")


def measure(
    deployment: Deployment, scenario: Scenario, round_number: int, args: argparse.Namespace
) -> Measurement:
    server = deployment.servers[scenario.server]
    keys = deployment.keys
    api_key = keys["reader_key"] if scenario.reader else keys["api_key"]
    busy = wait_for_quiet_machine(args.quiet_wait)
    if busy > QUIET_BUSY:
        log(f"  the machine is still {100 * busy:.0f} % busy with other work; measuring anyway")
    warm_up = wrk(server, scenario, api_key, args.warmup, args)
    warm_up.communicate()

    sampler = CpuSampler(server.process.pid, deployment.tree.database)
    usage_before = usage_row_count(deployment.tree)
    sampler.begin()
    busy_before = machine_busy_seconds()
    client_before = client_cpu_seconds()
    load = wrk(server, scenario, api_key, args.duration, args)
    while load.poll() is None:
        sampler.sample()
        time.sleep(0.25)
    output, _ = load.communicate()
    client = client_cpu_seconds() - client_before  # wrk is the only child reaped meanwhile
    busy = machine_busy_seconds() - busy_before
    sampler.sample()
    usage_rows = usage_row_count(deployment.tree) - usage_before

    line = next((line for line in output.splitlines() if line.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result for {scenario.name}:\n{output}")
    result = json.loads(line.removeprefix("BENCH_RESULT "))
    requests = max(result["requests"], 1)
    workers = sampler.used("gunicorn")
    workers.pop(server.process.pid, None)  # the master only supervises
    cpu = {group: sum(sampler.used(group).values()) for group in ("gunicorn", "postgres", "redis")}
    cpu["client"] = client
    cpu["other"] = max(0.0, busy - sum(cpu.values()))
    return Measurement(
        scenario=scenario.name,
        round=round_number,
        requests=result["requests"],
        seconds=result["duration_us"] / 1e6,
        rps=result["requests"] / (result["duration_us"] / 1e6),
        mean_ms=result["mean_us"] / 1000,
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        non_2xx=result["non_2xx"],
        socket_errors=result["socket_errors"],
        usage_rows_per_request=usage_rows / requests,
        cpu_ms_per_request={group: 1000 * seconds / requests for group, seconds in cpu.items()},
        busiest_worker_share=max(workers.values(), default=0.0) / max(sum(workers.values()), 1e-9),
        other_cores=cpu["other"] / (result["duration_us"] / 1e6),
    )


def code_version(tree: Tree) -> str:
    head = run(["git", "rev-parse", "--short", "HEAD"], cwd=tree.root).stdout.strip()
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=tree.root).stdout
    return head + (" with uncommitted changes" if dirty.strip() else "")


def machine_description() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores ({model})"


def median_of(measurements: list[Measurement], attribute: str) -> float:
    return float(statistics.median(getattr(m, attribute) for m in measurements))


def report(
    tree: Tree,
    results: list[Measurement],
    scenarios: list[Scenario],
    args: argparse.Namespace,
    started: str,
    code: str,
) -> str:
    by_name = {s.name: [m for m in results if m.scenario == s.name] for s in scenarios}
    bare_rps = median_of(by_name["bare"], "rps")
    bare_p50 = median_of(by_name["bare"], "p50_ms")
    connections = "kept alive" if args.keep_alive else "a new one for every request"
    lines = [
        f"{started}; code {code}; {machine_description()}; "
        + ("embedded: SQLite, no Redis" if tree.embedded else "PostgreSQL and Redis"),
        f"gunicorn {args.worker_class}, {args.workers} workers x {args.threads} threads; "
        f"wrk 1 thread, {args.connections} connections ({connections}); "
        f"{args.duration} s per run after {args.warmup} s warm-up; "
        f"median of {args.rounds} round(s), req/s range in brackets",
        "",
        "| Endpoint | req/s | p50 ms | p99 ms | mean ms | req/s vs bare | p50 vs bare "
        "| usage rows/req | other work (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        runs = by_name[scenario.name]
        rps, p50 = median_of(runs, "rps"), median_of(runs, "p50_ms")
        spread = f"{min(m.rps for m in runs):.0f}-{max(m.rps for m in runs):.0f}"
        lines.append(
            f"| {scenario.name} | {rps:.0f} [{spread}] | {p50:.2f} "
            f"| {median_of(runs, 'p99_ms'):.2f} | {median_of(runs, 'mean_ms'):.2f} "
            f"| {rps / bare_rps:.2f}x | {p50 / bare_p50:.1f}x "
            f"| {median_of(runs, 'usage_rows_per_request'):.2f} "
            f"| {median_of(runs, 'other_cores'):.2f} |"
        )

    groups = ["gunicorn", "postgres", "redis", "client", "other"]
    lines += [
        "",
        "CPU time per request (ms, median over rounds):",
        "",
        "| Endpoint | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for scenario in scenarios:
        runs = by_name[scenario.name]
        cells = [
            f"{statistics.median(m.cpu_ms_per_request[group] for m in runs):.2f}"
            for group in groups
        ]
        lines.append(f"| {scenario.name} | " + " | ".join(cells) + " |")

    with_usage = by_name["GET /v1/jobs/{id}"]
    without_usage = by_name["GET /v1/jobs/{id} (no usage)"]
    pairs = list(zip(with_usage, without_usage, strict=True))
    mean_deltas = [a.mean_ms - b.mean_ms for a, b in pairs]
    rps_deltas = [a.rps - b.rps for a, b in pairs]
    service_deltas = [1000 / a.rps - 1000 / b.rps for a, b in pairs]
    gunicorn_deltas = [
        a.cpu_ms_per_request["gunicorn"] - b.cpu_ms_per_request["gunicorn"] for a, b in pairs
    ]
    postgres_deltas = [
        a.cpu_ms_per_request["postgres"] - b.cpu_ms_per_request["postgres"] for a, b in pairs
    ]
    no_usage_rps = median_of(without_usage, "rps")
    lines += [
        "",
        "Usage recording, GET /v1/jobs/{id} with minus without the middleware "
        "(per round: " + ", ".join(f"{d:+.2f}" for d in mean_deltas) + " ms):",
        f"- mean latency: {statistics.median(mean_deltas):+.2f} ms per request",
        f"- throughput: {statistics.median(rps_deltas):+.0f} req/s "
        f"({100 * statistics.median(rps_deltas) / no_usage_rps:+.1f} %)",
        f"- server time per request at saturation (1/throughput): "
        f"{statistics.median(service_deltas):+.2f} ms",
        f"- CPU per request: gunicorn {statistics.median(gunicorn_deltas):+.2f} ms, "
        f"postgres {statistics.median(postgres_deltas):+.2f} ms",
    ]
    return "\n".join(lines)


def measure_quietest(
    deployment: Deployment, scenario: Scenario, round_number: int, args: argparse.Namespace
) -> Measurement:
    """One round's run of the scenario, measured again (up to --retries times) while other work
    used more than CONTAMINATED_CORES; the least disturbed attempt stands for the round."""
    attempts = []
    for _ in range(1 + args.retries):
        attempts.append(measure(deployment, scenario, round_number, args))
        log(
            f"  {attempts[-1].rps:.0f} req/s, p50 {attempts[-1].p50_ms:.2f} ms, "
            f"p99 {attempts[-1].p99_ms:.2f} ms; other work "
            f"{attempts[-1].other_cores:.2f} cores; busiest worker "
            f"{100 * attempts[-1].busiest_worker_share:.0f} % of gunicorn CPU"
        )
        if attempts[-1].other_cores <= CONTAMINATED_CORES:
            break
    return min(attempts, key=lambda attempt: attempt.other_cores)


def comparison(
    before: list[Measurement],
    after: list[Measurement],
    scenarios: list[Scenario],
    codes: dict[str, str],
) -> str:
    """Each scenario on the baseline and on the current tree, as ratios of each tree's own bare
    view: the ratio cancels the machine's drift, and both were measured back to back."""
    before_runs = {(m.scenario, m.round): m for m in before}
    after_runs = {(m.scenario, m.round): m for m in after}
    rounds = sorted({m.round for m in after})

    def vs_bare(runs: dict[tuple[str, int], Measurement], name: str, round_number: int) -> float:
        return runs[name, round_number].rps / runs["bare", round_number].rps

    def cpu(runs: list[Measurement], group: str) -> float:
        return statistics.median(m.cpu_ms_per_request[group] for m in runs)

    lines = [
        f"Baseline {codes['baseline']} → current {codes['current']}: req/s and its ratio to the "
        "same tree's bare view, the change in that ratio (per-round range in brackets), and CPU "
        "per request (ms); medians over rounds",
        "",
        "| Endpoint | before req/s (vs bare) | after req/s (vs bare) | change vs bare "
        "| gunicorn ms/req | postgres ms/req |",
        "|---|---|---|---|---|---|",
    ]
    before_bare = median_of([m for m in before if m.scenario == "bare"], "rps")
    after_bare = median_of([m for m in after if m.scenario == "bare"], "rps")
    for scenario in scenarios:
        was = [m for m in before if m.scenario == scenario.name]
        now = [m for m in after if m.scenario == scenario.name]
        was_rps, now_rps = median_of(was, "rps"), median_of(now, "rps")
        change = (now_rps / after_bare) / (was_rps / before_bare) - 1
        per_round = [
            vs_bare(after_runs, scenario.name, r) / vs_bare(before_runs, scenario.name, r) - 1
            for r in rounds
        ]
        lines.append(
            f"| {scenario.name} | {was_rps:.0f} ({was_rps / before_bare:.2f}x) "
            f"| {now_rps:.0f} ({now_rps / after_bare:.2f}x) "
            f"| {100 * change:+.0f} % [{100 * min(per_round):+.0f} to {100 * max(per_round):+.0f}] "
            f"| {cpu(was, 'gunicorn'):.2f} → {cpu(now, 'gunicorn'):.2f} "
            f"| {cpu(was, 'postgres'):.2f} → {cpu(now, 'postgres'):.2f} |"
        )
    return "\n".join(lines)


def baseline_tree(directory: Path, current: Tree) -> Tree:
    """The --baseline checkout, with stores next to the current tree's: `<database>_base` and
    the next Redis DB."""
    root = directory.resolve()
    if root == current.root:
        sys.exit(f"--baseline {directory} is this checkout; give another (git worktree add)")
    for needed in ("manage.py", "bench/settings.py", "bench/settings_no_usage.py"):
        if not (root / needed).is_file():
            sys.exit(
                f"--baseline {directory} has no {needed}: not a Phonos checkout this bench runs"
            )
    return Tree("baseline", root, f"{current.database}_base", current.redis_db + 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--worker-class", choices=["gthread", "sync"], default="gthread")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument(
        "--keep-alive",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="reuse connections (off by default: see docs/benchmarks.md)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--quiet-wait",
        type=int,
        default=30,
        help="before each run, wait up to this many seconds for other work on the machine to stop",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help=f"measure a run again when other work used more than {CONTAMINATED_CORES} cores",
    )
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument(
        "--database", default=DEFAULT_DATABASE, help="PostgreSQL database, dropped and re-created"
    )
    parser.add_argument("--redis-db", type=int, default=DEFAULT_REDIS_DB, help="Redis DB, flushed")
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="the quick-start default instead: SQLite in a temporary directory, no Redis",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also measure this other checkout (an older commit), scenario by scenario, and "
        "compare; its stores are <database>_base and Redis DB + 1",
    )
    args = parser.parse_args()
    if args.baseline and args.embedded:
        parser.error("--baseline compares two trees on PostgreSQL and Redis; drop --embedded")
    trees = [Tree("current", HERE, args.database, args.redis_db, args.embedded)]
    if args.baseline:
        trees.append(baseline_tree(args.baseline, trees[0]))

    preflight()
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    codes = {tree.name: code_version(tree) for tree in trees}
    var_dir = Path(tempfile.mkdtemp(prefix="phonos-bench-"))
    results: dict[str, list[Measurement]] = {tree.name: [] for tree in trees}
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, var_dir, ignore_errors=True)
        deployments = []
        for tree in trees:
            if tree.name == "baseline":
                log(f"baseline: {tree.root}, code {codes[tree.name]}")
            deployments.append(deploy(tree, var_dir / tree.name, args, cleanup))
        scenarios = deployments[0].scenarios
        for round_number in range(1, args.rounds + 1):
            # Current then baseline in odd rounds, baseline then current in even ones, so the
            # machine's drift within a round weighs on both trees alike.
            order = deployments if round_number % 2 else deployments[::-1]
            for index, scenario in enumerate(scenarios):
                for deployment in order:
                    tree = deployment.tree
                    on_tree = f" ({tree.name})" if args.baseline else ""
                    log(f"round {round_number}/{args.rounds}: {scenario.name}{on_tree}")
                    results[tree.name].append(
                        measure_quietest(
                            deployment, deployment.scenarios[index], round_number, args
                        )
                    )

    if args.json:
        figures: object = [asdict(m) for m in results["current"]]
        if args.baseline:
            figures = {name: [asdict(m) for m in runs] for name, runs in results.items()}
        args.json.write_text(json.dumps(figures, indent=2))
    if args.baseline:
        sections = [
            f"Current tree ({HERE}):\n\n"
            + report(trees[0], results["current"], scenarios, args, started, codes["current"]),
            f"Baseline ({trees[1].root}):\n\n"
            + report(trees[1], results["baseline"], scenarios, args, started, codes["baseline"]),
            comparison(results["baseline"], results["current"], scenarios, codes),
        ]
        print("\n\n".join(sections))
    else:
        print(report(trees[0], results["current"], scenarios, args, started, codes["current"]))
    failed = [m for runs in results.values() for m in runs if m.non_2xx or m.socket_errors]
    for measurement in failed:
        print(
            f"WARNING: {measurement.scenario} round {measurement.round}: "
            f"{measurement.non_2xx} non-2xx responses, {measurement.socket_errors} socket errors",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
