"""What a submission sends to PostgreSQL (apps.jobs.services): the statements of each path, and
plans that stay on the key lookup's partial indexes once PostgreSQL prepares them."""

import time

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.jobs import limits
from apps.jobs.catalog import submission_clean
from apps.jobs.models import Job
from apps.jobs.services import job_submit
from tests.api.test_money_and_limits import assert_ledger_balances
from tests.conftest import ESMFOLD_JOB

pytestmark = pytest.mark.django_db(transaction=True)


def _statements(queries: CaptureQueriesContext) -> list[str]:
    return [query["sql"].split()[0] for query in queries]


def _queue_counted() -> None:
    """The queue's count, far below its capacity, is read at most once a second per process
    (apps.jobs.limits): read it now, so that the submission measured next rides on it, whatever
    ran before the test."""
    limits.recent_counts_clear()
    assert limits.queue_has_room(capacity=settings.PHONOS_QUEUE_CAPACITY, new_jobs=0)


def _submit(client, body):
    return job_submit(
        account=client.account,
        api_key=None,
        submission=submission_clean(body),
        use_cache=body.get("params", {}).get("cache", True),
    )


def test_a_submission_without_the_cache_far_below_its_limits_is_one_statement(make_client):
    tenant = make_client(credits=1_000, max_active_jobs=10 * limits.FAR_LIMIT)
    no_cache = {**ESMFOLD_JOB, "params": {"cache": False}}
    limits.recent_counts_clear()
    _submit(tenant, no_cache)  # counts once; the next one rides on that count
    with CaptureQueriesContext(connection) as queries:
        job = _submit(tenant, no_cache)
    # The debit, its entry, the job and its event; then, published, the job's mark.
    assert _statements(queries) == ["WITH", "UPDATE"], [q["sql"][:80] for q in queries]
    job.refresh_from_db()
    assert (job.status, job.cost_credits, job.enqueued_at is not None) == ("pending", 10, True)
    assert job.events.count() == 1
    assert tenant.balance() == 980


def test_near_the_limit_the_count_rides_in_the_statement_after_the_lock(make_client):
    tenant = make_client(credits=1_000, max_active_jobs=5)
    _queue_counted()
    with CaptureQueriesContext(connection) as queries:
        _submit(tenant, {**ESMFOLD_JOB, "params": {"cache": False}})
    assert _statements(queries) == ["BEGIN", "SELECT", "WITH", "COMMIT", "UPDATE"]
    locks, writes = queries[1]["sql"], queries[2]["sql"]
    assert locks.startswith("SELECT id FROM accounts_account") and locks.endswith("FOR UPDATE")
    assert writes.startswith("WITH active_count")


@pytest.mark.parametrize("max_active_jobs", [5, 10 * limits.FAR_LIMIT], ids=["near", "far"])
def test_a_submission_that_may_reuse_a_run_is_one_statement(make_client, max_active_jobs):
    """The lock, the lookups, the count where one is due, the debit and the rows: one call of
    phonos_job_submit, its own transaction (no BEGIN, no COMMIT)."""
    tenant = make_client(credits=1_000, max_active_jobs=max_active_jobs)
    _queue_counted()
    with CaptureQueriesContext(connection) as queries:
        leader = _submit(tenant, ESMFOLD_JOB)
    # The leader: the one statement, then its publish and mark.
    assert _statements(queries) == ["SELECT", "UPDATE"], [q["sql"][:60] for q in queries]
    assert "phonos_job_submit" in queries[0]["sql"]
    with CaptureQueriesContext(connection) as queries:
        follower = _submit(tenant, ESMFOLD_JOB)
    assert _statements(queries) == ["SELECT"]
    stored = Job.objects.get(id=follower.id)
    assert (stored.cached, stored.cached_from_id, stored.outputs_of_id) == (
        True,
        leader.id,
        leader.id,
    )
    assert (follower.cached, follower.cached_from_id) == (True, leader.id)
    assert stored.events.count() == 1
    assert tenant.balance() == 980
    assert_ledger_balances(tenant.account)


def _index_scans() -> dict[str, int]:
    """Scans of each index of the job table, as the statistics collector last published them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE relname = 'jobs_job'"
        )
        return dict(cursor.fetchall())


def test_the_key_lookup_reads_its_partial_indexes_every_time(make_client):
    """The function keeps its plans for the session; after its first five calls PostgreSQL may
    keep one generic plan for all. With the statuses as parameters that plan could not use the
    partial indexes (it walked the jobs by status or by account)."""
    tenant = make_client(credits=10_000)
    _submit(tenant, ESMFOLD_JOB)
    before = _index_scans()
    for _ in range(12):
        _submit(tenant, ESMFOLD_JOB)
    deadline = time.monotonic() + 10  # a backend publishes its counts within a second or so
    while True:
        after = _index_scans()
        scanned = {name: after[name] - before.get(name, 0) for name in after}
        if scanned["job_key_leader"] >= 12 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert scanned["job_key_stored_result"] >= 12, scanned
    assert scanned["job_key_leader"] >= 12, scanned


def _job_updates() -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'jobs_job'"
        )
        updated, in_place = cursor.fetchone()
    return updated, in_place


def test_the_publish_mark_updates_the_job_in_place(make_client):
    """No index holds `enqueued_at`, and the table leaves room in its pages: the mark written
    after each publish is a HOT update, which adds no entry to the table's ten indexes."""
    tenant = make_client(credits=10_000)
    no_cache = {**ESMFOLD_JOB, "params": {"cache": False}}
    before = _job_updates()
    for _ in range(30):
        _submit(tenant, no_cache)
    deadline = time.monotonic() + 10
    while True:
        after = _job_updates()
        updated, in_place = after[0] - before[0], after[1] - before[1]
        if updated >= 30 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert updated >= 30, (updated, in_place)
    assert in_place >= 0.9 * updated, (updated, in_place)
