"""The active-job limit and the queue capacity stay exact where they can be reached, and a
backlog far below a large limit is not counted on every submission (apps.jobs.limits)."""

import time
from functools import partial

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.jobs import limits
from apps.jobs.models import Job
from tests.api.test_auth_and_errors import assert_error
from tests.api.test_money_and_limits import assert_ledger_balances
from tests.conftest import ESMFOLD_JOB, parallel

pytestmark = pytest.mark.django_db(transaction=True)


def _pending(account, count: int) -> None:
    Job.objects.bulk_create(
        Job(account=account, model="esmfold", sequence="MKT", cost_credits=0, stage="queued")
        for _ in range(count)
    )


def _counts(queries: CaptureQueriesContext) -> int:
    return sum("COUNT(*) FROM (SELECT 1 FROM jobs_job" in query["sql"] for query in queries)


def test_a_large_active_job_limit_is_exact_where_it_is_reached(make_client):
    tenant = make_client(credits=100, max_active_jobs=limits.FAR_LIMIT)
    _pending(tenant.account, limits.FAR_LIMIT - 2)
    limits.recent_counts_clear()  # the jobs came in behind this process's back
    no_cache = {**ESMFOLD_JOB, "params": {"cache": False}}
    assert [tenant.post("/v1/predict", json=no_cache).status_code for _ in range(2)] == [200, 200]
    body = assert_error(tenant.post("/v1/predict", json=no_cache), 429)
    assert f"{limits.FAR_LIMIT} active jobs" in body["message"]
    assert tenant.balance() == 80
    assert Job.objects.filter(account=tenant.account).count() == limits.FAR_LIMIT


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
def test_parallel_submissions_stop_exactly_at_a_small_active_job_limit(make_client, cache):
    """The count rides in the statement that debits and writes the job (apps.jobs.services),
    after the account's row lock: submissions racing for the last places count one by one,
    whether or not the result cache took the lock first."""
    tenant = make_client(credits=1_000, max_active_jobs=3)
    limits.recent_counts_clear()
    bodies = [
        {**ESMFOLD_JOB, "sequence": "MKT" + "A" * index, "params": {"cache": cache}}
        for index in range(12)
    ]
    responses = parallel([partial(tenant.post, "/v1/predict", body) for body in bodies], workers=12)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 3 + [429] * 9, statuses
    assert all(
        response.json()["reason"] == "active_jobs"
        for response in responses
        if response.status_code == 429
    )
    assert Job.objects.filter(account=tenant.account).count() == 3
    assert tenant.balance() == 970
    assert_ledger_balances(tenant.account)


def test_a_large_queue_capacity_is_exact_where_it_is_reached(make_client, settings):
    settings.PHONOS_QUEUE_CAPACITY = limits.FAR_LIMIT
    filler = make_client(name="filler")
    _pending(filler.account, limits.FAR_LIMIT - 1)
    limits.recent_counts_clear()
    tenant = make_client(credits=100)
    assert tenant.post("/v1/predict", json=ESMFOLD_JOB).status_code == 200
    body = assert_error(tenant.post("/v1/predict", json={**ESMFOLD_JOB, "sequence": "MKV"}), 429)
    assert body["reason"] == "queue_full"
    assert tenant.balance() == 90


def test_far_below_a_large_limit_a_process_counts_at_most_once_a_second(make_client):
    tenant = make_client()
    limits.recent_counts_clear()
    large = 1_000_000
    with CaptureQueriesContext(connection) as queries:
        assert all(
            limits.account_has_room(account_id=tenant.account.id, limit=large) for _ in range(20)
        )
        assert all(limits.queue_has_room(capacity=large, new_jobs=2) for _ in range(20))
    assert _counts(queries) == 2
    time.sleep(limits.RECOUNT_SECONDS)
    with CaptureQueriesContext(connection) as queries:
        assert limits.account_has_room(account_id=tenant.account.id, limit=large)
    assert _counts(queries) == 1


def test_past_half_a_large_limit_every_submission_counts(make_client):
    tenant = make_client()
    limits.recent_counts_clear()
    limit = limits.FAR_LIMIT
    _pending(tenant.account, limit // 2)
    with CaptureQueriesContext(connection) as queries:
        assert all(
            limits.account_has_room(account_id=tenant.account.id, limit=limit) for _ in range(5)
        )
    assert _counts(queries) == 5
    # A small limit is counted every time, however far below it.
    with CaptureQueriesContext(connection) as queries:
        assert all(limits.queue_has_room(capacity=limit - 1, new_jobs=1) for _ in range(5))
    assert _counts(queries) == 5
