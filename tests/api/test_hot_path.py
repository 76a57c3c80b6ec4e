"""The API hot path's shortcuts against a real gunicorn (2 gthread workers, as bench/api_load
runs it): cached key lookups stop at revocation within the documented bound, usage counters
reach GET /v1/usage within the documented lag, a fold survives its own crash, and killing
the API outright loses at most the buffered usage window and never a credit."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.response import Response

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_revoke
from apps.billing.models import LedgerEntry
from apps.common.counters import PENDING_HASH, counters_flush
from apps.common.middleware import LeanApiMiddleware
from apps.common.parsers import MAX_DEPTH
from apps.common.ratelimit import CREDENTIALS_VERSION_KEY, redis_client
from apps.common.request_usage import RequestUsage, request_usage
from apps.jobs.apis import JobDetailApi, JobListApi
from apps.jobs.models import Job
from apps.usage.models import UsageCounter, UsageFold
from apps.usage.services import CLAIM_PREFIX, CLAIMS_SET, usage_fold, usage_record
from tests.conftest import ESMFOLD_JOB, Client, free_port, wait_until_serving, worker_environment

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
REVOCATION_BOUND_SECONDS = 5  # docs/api.md
USAGE_LAG_SECONDS = 60  # docs/api.md


@dataclass
class Gunicorn:
    url: str
    process: subprocess.Popen


@pytest.fixture
def gunicorn(tmp_path) -> Iterator[Gunicorn]:
    port = free_port()
    log = tmp_path / "gunicorn.log"
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "phonos.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            "--worker-class=gthread",
            "--workers=2",
            "--threads=4",
            "--log-level=warning",
            "--graceful-timeout=5",
        ],
        cwd=ROOT,
        env=worker_environment(PHONOS_QUEUE_CAPACITY="100000"),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url, process, log, timeout=60)
    try:
        yield Gunicorn(url=url, process=process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _get(url: str, key: str, path: str) -> requests.Response:
    return requests.get(url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_requests_after_the_database_dropped_the_servers_connections_are_answered(gunicorn, alice):
    """The persistent connections' health check (phonos.postgresql) sends no query while the
    connection is sound, and still replaces one the server closed before a request uses it."""
    for _ in range(16):  # every worker thread holds a connection open (CONN_MAX_AGE)
        assert _get(gunicorn.url, alice.key, "/v1/jobs?limit=1").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
            "current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        assert cursor.fetchall(), "gunicorn held no connection to drop"
    time.sleep(0.2)
    for _ in range(16):
        answer = _get(gunicorn.url, alice.key, "/v1/jobs?limit=1")
        assert answer.status_code == 200, answer.text


def test_a_revoked_key_stops_working_in_every_process_within_the_bound(gunicorn, alice):
    # Both workers cache the lookup (a new connection per request spreads them).
    for _ in range(8):
        assert _get(gunicorn.url, alice.key, "/v1/account").status_code == 200
    api_key_revoke(account=alice.account, key_id=alice.account.api_keys.get().id)
    revoked_at = time.monotonic()
    while _get(gunicorn.url, alice.key, "/v1/account").status_code != 401:
        assert time.monotonic() - revoked_at < REVOCATION_BOUND_SECONDS
    # From then on no worker lets it through, on the lean reads (no DRF) either.
    assert {_get(gunicorn.url, alice.key, "/v1/account").status_code for _ in range(8)} == {401}
    assert {_get(gunicorn.url, alice.key, "/v1/jobs").status_code for _ in range(8)} == {401}


def _drf_answer(view: Callable[..., Any], key: str, path: str, **kwargs: str) -> Response:
    request = RequestFactory().get(path, HTTP_AUTHORIZATION=f"Bearer {key}")
    response = view(request, **kwargs)
    response.render()
    return response


SAME_HEADERS = (
    "Content-Type",
    "Allow",
    "Vary",
    "RateLimit-Limit",
    "WWW-Authenticate",
    "Retry-After",
)


def test_the_lean_reads_answer_byte_for_byte_as_the_drf_views(alice, charlie):
    ids = [
        alice.post("/v1/predict", {**ESMFOLD_JOB, "name": f"job {n} é"}).json()["job_id"]
        for n in range(3)
    ]
    Job.objects.filter(id=ids[0]).update(
        status=Job.Status.COMPLETED,
        output_file=f"{ids[0]}.pdb",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        run_seconds=1.23456,
        batch_size=2,
        progress=1,
        webhook_url="https://example.com/hook",
        webhook_events=["job.completed"],
    )
    Job.objects.filter(id=ids[1]).update(
        status=Job.Status.FAILED, error="out of memory", depends_on_id=ids[2], cached_from_id=ids[0]
    )
    charlies = charlie.post("/v1/predict", ESMFOLD_JOB).json()["job_id"]
    detail = [(f"/v1/jobs/{job_id}", {"job_id": job_id}) for job_id in [*ids, charlies, "nope"]]
    listings = ["/v1/jobs", "/v1/jobs?limit=2&offset=1", "/v1/jobs?status=completed&model=all"]
    cases = [(path, JobDetailApi.as_view(), kwargs) for path, kwargs in detail] + [
        (path, JobListApi.as_view(), {}) for path in [*listings, "/v1/jobs?offset=9"]
    ]
    for path, view, kwargs in cases:
        lean = alice.get(path)
        drf = _drf_answer(view, alice.key, path, **kwargs)
        assert (lean.status_code, lean.content) == (drf.status_code, drf.content), path
        assert {name: lean.headers.get(name) for name in SAME_HEADERS} == {
            name: drf.get(name) for name in SAME_HEADERS
        }, path
        assert lean.headers["RateLimit-Remaining"] and lean.headers["X-Request-ID"]
    assert alice.get(f"/v1/jobs/{charlies}").json()["error"] == "Not Found"  # tenancy
    assert alice.get("/v1/jobs?limit=2&offset=1").json()["pagination"] == {
        "total": 3,
        "limit": 2,
        "offset": 1,
        "has_more": False,
    }


def test_the_lean_reads_skip_the_dashboards_middleware_and_keep_its_headers(alice):
    """LeanApiMiddleware answers a lean read before sessions, CSRF, messages, axes and
    whitenoise, and adds what they would have added: the same headers as the DRF view gets
    through the whole chain (a listing with `search` goes there)."""
    job_id = alice.post("/v1/predict", ESMFOLD_JOB).json()["job_id"]
    through_chain = alice.get("/v1/jobs?search=")
    for path in ("/v1/jobs", f"/v1/jobs/{job_id}"):
        lean = alice.get(path)
        assert lean.status_code == through_chain.status_code == 200
        assert set(lean.headers) == set(through_chain.headers), path
        assert lean.headers["X-Frame-Options"] == through_chain.headers["X-Frame-Options"]
        assert int(lean.headers["Content-Length"]) == len(lean.content)
    # Through the middleware itself: the chain below it never runs for a lean read, and runs
    # for everything the lean answer declines (here a query only the view can judge).
    below: list[str] = []

    def chain(request: Any) -> Any:
        below.append(request.get_full_path())
        return HttpResponse(status=204)

    middleware = LeanApiMiddleware(chain)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {alice.key}"}
    lean = middleware(RequestFactory().get(f"/v1/jobs/{job_id}", **bearer))
    assert lean.status_code == 200 and json.loads(lean.content)["job_id"] == job_id
    assert below == []
    for path in ("/v1/jobs?limit=0", f"/v1/jobs/{job_id}/download", "/v1/jobsx"):
        assert middleware(RequestFactory().get(path, **bearer)).status_code == 204
    assert middleware(RequestFactory().post("/v1/jobs", **bearer)).status_code == 204
    assert below == ["/v1/jobs?limit=0", f"/v1/jobs/{job_id}/download", "/v1/jobsx", "/v1/jobs"]


def test_the_lean_reads_keep_the_rate_limit_and_the_error_envelope(make_client):
    tenant = make_client(rate_limit=3)
    answers = [tenant.get("/v1/jobs") for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert answers[3].json() == {
        "error": "Rate limit exceeded",
        "message": "You have exceeded the rate limit of 3 requests per minute",
        "reason": "rate_limit",
    }
    assert int(answers[3].headers["Retry-After"]) > 0
    assert answers[3].headers["RateLimit-Remaining"] == "0"
    # What only the view can judge goes to it, and is refused in its words, counted once.
    other = make_client(rate_limit=10)
    refused = other.get("/v1/jobs?limit=0")
    assert refused.status_code == 400 and refused.headers["RateLimit-Remaining"] == "9"
    assert refused.json()["message"] == "limit: Ensure this value is greater than or equal to 1."
    unauthorized = requests.get(other.base_url + "/v1/jobs/x", timeout=30)
    assert unauthorized.status_code == 401 and set(unauthorized.json()) == {"error", "message"}


# --- The lean submission ----------------------------------------------------------------------

# A `Prefer` that asks no wait: the submission goes down the whole chain to PredictApi, which
# answers it as it would answer it without the header.
THROUGH_THE_VIEW = {"Prefer": "respond-async"}
# What differs from one request to the next, whoever answers.
PER_REQUEST = {"Date", "X-Request-ID", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"}


def _submit(client: Client, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    """POST /v1/predict with `body` as it is (bytes) or as JSON."""
    return requests.post(
        client.base_url + "/v1/predict",
        data=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {client.key}",
            "Content-Type": "application/json",
            **(headers or {}),
        },
        timeout=30,
    )


def _assert_same_answer(lean: requests.Response, drf: requests.Response) -> None:
    """The same status, body bytes (but for each submission's own job id) and headers."""

    def masked(answer: requests.Response) -> bytes:
        job_id = answer.json().get("job_id") if answer.status_code == 200 else None
        return answer.content.replace(job_id.encode(), b"<job id>") if job_id else answer.content

    assert (lean.status_code, masked(lean)) == (drf.status_code, masked(drf))
    assert set(lean.headers) == set(drf.headers)
    stable = set(lean.headers) - PER_REQUEST
    assert {name: lean.headers[name] for name in stable} == {
        name: drf.headers[name] for name in stable
    }


def test_the_lean_submission_answers_byte_for_byte_as_the_drf_view(make_client):
    client = make_client(credits=100_000)
    bodies: list[Any] = [
        ESMFOLD_JOB,
        {**ESMFOLD_JOB, "name": "é ✓ \u2028 <b>"},
        {**ESMFOLD_JOB, "params": {}},
        b'{"model": "esmfold", "sequence": ',
        b'{"model": "esmfold", "sequence": "MKT\\u0000A"}',
        b'{"model": "esmfold", "sequence": "MKTA", "name": "\\ud800"}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe{}",
        b'{"model": "esmfold", "sequence": "MKTA", "params": {"x": NaN}}',
        [],
        "esmfold",
        {"model": "nope", "sequence": "MKTA"},
        {"model": "esmfold", "sequence": "MKT1"},
        {"model": "esmfold"},
        {**ESMFOLD_JOB, "webhook_url": "http://127.0.0.1/hook"},
        # Around MAX_DEPTH, which holds however deep the parser's call stack is.
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b"[" * 320 + b"]" * 320,
    ]
    for body in bodies:
        lean, drf = _submit(client, body), _submit(client, body, THROUGH_THE_VIEW)
        _assert_same_answer(lean, drf)
        assert lean.headers["RateLimit-Remaining"] and lean.headers["X-Request-ID"]
    statuses = [_submit(client, body).status_code for body in bodies]
    assert statuses == [200] * 3 + [400] * 15
    messages = [_submit(client, body).json()["message"] for body in bodies]
    assert messages[3].startswith("Malformed request body: JSON parse error - ")
    assert "NUL characters" in messages[4] and "unpaired surrogates" in messages[5]
    too_deep = "Malformed request body: JSON parse error - the document is nested too deeply"
    assert [messages[6], *messages[-2:]] == [too_deep] * 3 and messages[-3] != too_deep
    # A charset named, as some clients do; another content type or none is the view's (415).
    charset = {"Content-Type": "application/json; charset=utf-8"}
    _assert_same_answer(
        _submit(client, ESMFOLD_JOB, charset),
        _submit(client, ESMFOLD_JOB, charset | THROUGH_THE_VIEW),
    )
    for content_type in ("text/plain", ""):
        refused = _submit(client, ESMFOLD_JOB, {"Content-Type": content_type})
        assert refused.status_code == 415, refused.text
    assert _submit(client, b"").status_code == 400  # DRF reads no body as {}


def test_the_lean_submission_refuses_as_the_drf_view(make_client, settings):
    poor = make_client(credits=5)
    lean, drf = _submit(poor, ESMFOLD_JOB), _submit(poor, ESMFOLD_JOB, THROUGH_THE_VIEW)
    assert lean.status_code == 402
    _assert_same_answer(lean, drf)

    limited = make_client(rate_limit=2)
    answers = [_submit(limited, ESMFOLD_JOB, headers) for headers in (None, THROUGH_THE_VIEW) * 2]
    assert [answer.status_code for answer in answers] == [200, 200, 429, 429]
    _assert_same_answer(answers[2], answers[3])
    assert answers[2].json()["reason"] == "rate_limit"
    assert int(answers[2].headers["Retry-After"]) > 0
    assert answers[2].headers["RateLimit-Remaining"] == "0"

    busy = make_client(max_active_jobs=1)
    assert _submit(busy, ESMFOLD_JOB).status_code == 200
    lean, drf = _submit(busy, ESMFOLD_JOB), _submit(busy, ESMFOLD_JOB, THROUGH_THE_VIEW)
    assert lean.status_code == 429 and lean.json()["reason"] == "active_jobs"
    _assert_same_answer(lean, drf)

    settings.PHONOS_REQUIRE_AVAILABLE_WORKER = True  # and no worker runs
    client = make_client()
    lean, drf = _submit(client, ESMFOLD_JOB), _submit(client, ESMFOLD_JOB, THROUGH_THE_VIEW)
    assert lean.status_code == 503 and lean.headers["Retry-After"]
    _assert_same_answer(lean, drf)
    assert lean.headers["Retry-After"] == drf.headers["Retry-After"]
    assert client.balance() == 1000 and poor.balance() == 5


def test_the_lean_submission_refuses_a_revoked_key_as_the_drf_view(alice):
    api_key = alice.account.api_keys.get()

    def revoked_elsewhere() -> None:
        """Another process's revocation as this one sees it: its cached lookup still fresh, the
        credentials version bumped in Redis (apps.accounts.key_cache)."""
        ApiKey.objects.filter(id=api_key.id).update(revoked_at=None)
        assert alice.get("/v1/jobs").status_code == 200
        ApiKey.objects.filter(id=api_key.id).update(revoked_at=timezone.now())
        redis_client().incr(CREDENTIALS_VERSION_KEY)

    revoked_elsewhere()
    lean = _submit(alice, ESMFOLD_JOB)
    revoked_elsewhere()
    drf = _submit(alice, ESMFOLD_JOB, THROUGH_THE_VIEW)
    assert lean.status_code == 401 and lean.headers["RateLimit-Limit"]
    _assert_same_answer(lean, drf)
    # Without a good key the lean path declines: the view refuses it in its own words.
    for headers in ({}, {"Authorization": "Basic x"}, {"Authorization": "Bearer pk_nope"}):
        lean, drf = (
            _submit(alice, ESMFOLD_JOB, headers | extra) for extra in ({}, THROUGH_THE_VIEW)
        )
        assert lean.status_code == 401 and lean.headers["WWW-Authenticate"]
        _assert_same_answer(lean, drf)
    anonymous = requests.post(alice.base_url + "/v1/predict", json=ESMFOLD_JOB, timeout=30)
    assert anonymous.status_code == 401
    assert not Job.objects.exists()


def test_the_lean_submission_keeps_idempotency_and_cache_control(alice):
    key = {"Idempotency-Key": "order-1"}
    first = _submit(alice, ESMFOLD_JOB, key)
    replayed = _submit(alice, ESMFOLD_JOB, key)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    # The replay is the stored body (jsonb: its keys in PostgreSQL's order), the view's as well.
    assert replayed.json() == first.json() and replayed.headers["Idempotent-Replayed"] == "true"
    _assert_same_answer(replayed, _submit(alice, ESMFOLD_JOB, key | THROUGH_THE_VIEW))
    # The fingerprint is over the parsed body: the same JSON written otherwise replays.
    respelled = _submit(alice, json.dumps(ESMFOLD_JOB, indent=2).encode(), key)
    assert respelled.content == replayed.content
    other = {**ESMFOLD_JOB, "name": "another"}
    conflict = _submit(alice, other, key)
    assert conflict.status_code == 409
    _assert_same_answer(conflict, _submit(alice, other, key | THROUGH_THE_VIEW))
    too_long = {"Idempotency-Key": "k" * 256}
    refused = _submit(alice, ESMFOLD_JOB, too_long)
    assert refused.status_code == 400
    _assert_same_answer(refused, _submit(alice, ESMFOLD_JOB, too_long | THROUGH_THE_VIEW))
    assert Job.objects.filter(account=alice.account).count() == 1
    assert alice.balance() == 1000 - 10
    # An identical job in flight is followed, unless the request asks for no cache.
    leader = first.json()["job_id"]
    follower = _submit(alice, ESMFOLD_JOB).json()["job_id"]
    own_run = _submit(alice, ESMFOLD_JOB, {"Cache-Control": "no-cache"}).json()["job_id"]
    assert str(Job.objects.get(id=follower).cached_from_id) == leader
    assert Job.objects.get(id=own_run).cached_from_id is None


def test_the_lean_submission_skips_the_dashboards_middleware(alice):
    """Through LeanApiMiddleware itself: a plain JSON submission never reaches the chain below
    (and its usage names the model and the credits); everything unusual does. Over HTTP, the
    answers above carry the same headers as the view's through the whole chain."""
    below: list[str] = []

    def chain(request: Any) -> Any:
        below.append(request.path)
        return HttpResponse(status=204)

    middleware = LeanApiMiddleware(chain)
    factory = RequestFactory()
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {alice.key}"}
    submission = factory.post("/v1/predict", ESMFOLD_JOB, content_type="application/json", **bearer)
    answered = middleware(submission)
    assert answered.status_code == 200 and json.loads(answered.content)["success"] is True
    assert answered["X-Frame-Options"] and int(answered["Content-Length"]) > 0
    assert below == []
    usage = request_usage(submission)
    assert (usage.model, usage.credits) == ("esmfold", 10) and usage.api_key_id is not None
    unusual = [
        factory.post(
            "/v1/predict",
            ESMFOLD_JOB,
            content_type="application/json",
            HTTP_PREFER="wait=1",
            **bearer,
        ),
        factory.post("/v1/predict", "MKTA", content_type="text/plain", **bearer),
        factory.post("/v1/predict", ESMFOLD_JOB, content_type="application/json"),
        factory.post(
            "/v1/predict",
            ESMFOLD_JOB,
            content_type="application/json",
            HTTP_ACCEPT="application/json; indent=2",
            **bearer,
        ),
        factory.put("/v1/predict", ESMFOLD_JOB, content_type="application/json", **bearer),
        factory.post("/v1/validate", ESMFOLD_JOB, content_type="application/json", **bearer),
    ]
    for request in unusual:
        assert middleware(request).status_code == 204
    assert len(below) == len(unusual)
    assert Job.objects.filter(account=alice.account).count() == 1


def _usage(url: str, key: str) -> dict:
    body = _get(url, key, "/v1/usage?days=1").json()
    return {row["endpoint"]: row for row in body["by_endpoint"]} | {"_totals": body["totals"]}


def test_usage_counts_every_request_within_the_lag(gunicorn, alice):
    job_id = alice.post("/v1/predict", ESMFOLD_JOB).json()["job_id"]
    for _ in range(20):
        assert _get(gunicorn.url, alice.key, f"/v1/jobs/{job_id}").status_code == 200
    started = time.monotonic()
    # The predict was counted by this test process (the live server), the GETs by gunicorn's
    # workers: each process's buffer reaches Redis on its own flush, within the lag.
    while (usage := _usage(gunicorn.url, alice.key)).get("/v1/jobs/{job_id}", {}).get(
        "requests", 0
    ) < 20 or "/v1/predict" not in usage:
        assert time.monotonic() - started < USAGE_LAG_SECONDS
        time.sleep(0.2)
    usage = _usage(gunicorn.url, alice.key)
    assert usage["/v1/jobs/{job_id}"]["requests"] == 20
    assert usage["/v1/predict"] == {"endpoint": "/v1/predict", "requests": 1, "credits_used": 10}
    assert usage["_totals"]["avg_response_time_ms"] > 0


def test_a_fold_that_crashed_is_finished_once_by_the_next(alice):
    client = redis.Redis.from_url(settings.REDIS_URL)
    usage = RequestUsage(
        api_key_id=alice.account.api_keys.get().id, account_id=alice.account.id, credits=5
    )
    for _ in range(3):
        usage_record(usage=usage, endpoint="/v1/x", method="GET", status_code=200, latency_ms=2)
    assert counters_flush()
    # Died after claiming, before committing: the claim waits for the next fold.
    claim = f"{CLAIM_PREFIX}crashed-before-commit"
    client.sadd(CLAIMS_SET, claim)
    client.rename(PENDING_HASH, claim)
    assert usage_fold() == 3
    # Died after committing, before deleting: the claim is recorded, so it is not added again.
    usage_record(usage=usage, endpoint="/v1/x", method="GET", status_code=200, latency_ms=2)
    assert counters_flush()
    claim = f"{CLAIM_PREFIX}crashed-after-commit"
    client.sadd(CLAIMS_SET, claim)
    client.rename(PENDING_HASH, claim)
    UsageFold.objects.create(claim=claim)
    assert usage_fold() == 0
    assert not client.exists(claim) and not client.smembers(CLAIMS_SET)
    counter = UsageCounter.objects.get(account=alice.account, endpoint="/v1/x")
    assert (counter.requests, counter.credits, counter.latency_ms_sum) == (3, 15, 6.0)


@pytest.mark.slow
def test_killing_the_api_under_load_loses_at_most_the_buffered_usage_and_no_credit(
    gunicorn, make_client
):
    tenant = make_client(credits=100_000, rate_limit=100_000, max_active_jobs=100_000)
    headers = {"Authorization": f"Bearer {tenant.key}"}
    answered: list[tuple[float, str, int]] = []  # (when, endpoint, status)
    sent = [0]
    stop = threading.Event()

    def load(predict: bool) -> None:
        session = requests.Session()
        job_id = None
        while not stop.is_set():
            sent[0] += 1
            try:
                if predict or job_id is None:
                    reply = session.post(
                        gunicorn.url + "/v1/predict", json=ESMFOLD_JOB, headers=headers, timeout=10
                    )
                    endpoint = "/v1/predict"
                    if reply.status_code == 200:
                        job_id = reply.json()["job_id"]
                else:
                    reply = session.get(
                        f"{gunicorn.url}/v1/jobs/{job_id}", headers=headers, timeout=10
                    )
                    endpoint = "/v1/jobs/{job_id}"
            except requests.RequestException:
                continue
            answered.append((time.monotonic(), endpoint, reply.status_code))

    threads = [threading.Thread(target=load, args=(index % 2 == 0,)) for index in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    killed_at = time.monotonic()
    os.killpg(gunicorn.process.pid, signal.SIGKILL)
    gunicorn.process.wait()
    stop.set()
    for thread in threads:
        thread.join()

    # Never a credit: the balance is the opening credits less every job that exists, and every
    # job a client was told about exists.
    jobs = Job.objects.filter(account=tenant.account)
    charged = jobs.aggregate(total=Sum("cost_credits"))["total"] or 0
    assert tenant.balance() == 100_000 - charged
    ledger = LedgerEntry.objects.filter(account=tenant.account).aggregate(total=Sum("amount"))
    assert ledger["total"] == tenant.balance()
    told = sum(1 for _, endpoint, status in answered if endpoint == "/v1/predict" and status == 200)
    assert jobs.count() >= told > 0

    # Usage: whatever was answered before the last flush window is counted; nothing is
    # counted that was not sent.
    usage_fold()
    counted = (
        UsageCounter.objects.filter(account=tenant.account).aggregate(total=Sum("requests"))[
            "total"
        ]
        or 0
    )
    window = settings.PHONOS_USAGE_FLUSH_SECONDS + 1  # the flush interval, and a margin
    settled = sum(1 for when, _, _ in answered if when < killed_at - window)
    assert settled <= counted <= sent[0], (settled, counted, sent[0], len(answered))


def test_buffered_counters_ride_the_rate_limit_round_trip_with_any_field_name():
    """The increments go packed in one script argument (apps.common.ratelimit): fields with the
    separators in them, non-ASCII ones and float amounts arrive as they were buffered."""
    from apps.common.counters import counters_add, counters_drain
    from apps.common.ratelimit import rate_limit_hit

    counters_drain()
    fields = {
        ("phonos:test:a", 'x,1,2:["odd",[["k","v"]]]'): 3,
        ("phonos:test:a", "ünïcode:/v1/jobs/{job_id}\n"): 1,
        ("phonos:test:b", "seconds"): 0.25,
    }
    counters_add(fields)
    counters_add({("phonos:test:b", "seconds"): 0.5})
    decision = rate_limit_hit(key_id=987_654, limit=10)
    assert decision.allowed and decision.remaining == 9
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    assert client.hgetall("phonos:test:a") == {
        'x,1,2:["odd",[["k","v"]]]': "3",
        "ünïcode:/v1/jobs/{job_id}\n": "1",
    }
    assert float(client.hget("phonos:test:b", "seconds")) == 0.75


def test_the_rate_limit_counts_on_after_redis_forgets_its_script_and_drops_its_connections():
    """The rate limit's script runs on a pooled connection without redis-py's retry wrapper
    (apps.common.ratelimit.script_run): a Redis that lost the script (a restart, SCRIPT FLUSH)
    gets it again, and a connection that Redis closed is replaced, the count exact throughout."""
    from apps.common.ratelimit import rate_limit_hit, redis_client

    key_id = 987_655
    redis_client().delete(f"phonos:ratelimit:{key_id}")
    assert rate_limit_hit(key_id=key_id, limit=5).remaining == 4
    admin = redis.Redis.from_url(settings.REDIS_URL)
    admin.script_flush()
    assert rate_limit_hit(key_id=key_id, limit=5).remaining == 3
    # The limiter's connections closed by the server, as a Redis restart closes them.
    pool = redis_client().connection_pool
    idle = list(pool._available_connections)
    assert idle
    for pooled in idle:
        host, port = pooled._sock.getsockname()[:2]
        assert admin.client_kill_filter(addr=f"{host}:{port}") == 1
    decision = rate_limit_hit(key_id=key_id, limit=5)
    assert decision.allowed and decision.remaining == 2
    assert [rate_limit_hit(key_id=key_id, limit=5).allowed for _ in range(3)] == [True, True, False]
