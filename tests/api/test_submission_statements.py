"""What a submission sends to PostgreSQL (apps.jobs.services): the statements of each path, and
plans that stay on the key lookup's partial indexes once PostgreSQL prepares them."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.jobs import limits
from apps.jobs.catalog import submission_clean
from apps.jobs.models import Job
from apps.jobs.services import _KEY_LOOKUP_SQL, _SOURCE_COLUMNS, job_submit
from tests.conftest import ESMFOLD_JOB

pytestmark = pytest.mark.django_db(transaction=True)


def _statements(queries: CaptureQueriesContext) -> list[str]:
    return [query["sql"].split()[0] for query in queries]


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
    with CaptureQueriesContext(connection) as queries:
        _submit(tenant, {**ESMFOLD_JOB, "params": {"cache": False}})
    assert _statements(queries) == ["BEGIN", "SELECT", "WITH", "COMMIT", "UPDATE"]
    locks, writes = queries[1]["sql"], queries[2]["sql"]
    assert locks.startswith("SELECT id FROM accounts_account") and locks.endswith("FOR UPDATE")
    assert writes.startswith("WITH active_count")


def test_a_follower_is_the_lock_the_lookup_and_one_statement(make_client):
    tenant = make_client(credits=1_000)
    leader = _submit(tenant, ESMFOLD_JOB)
    with CaptureQueriesContext(connection) as queries:
        follower = _submit(tenant, ESMFOLD_JOB)
    assert _statements(queries) == ["BEGIN", "SELECT", "(SELECT", "WITH", "COMMIT"]
    assert Job.objects.get(id=follower.id).cached_from_id == leader.id


def test_the_key_lookup_keeps_its_partial_indexes_in_a_generic_plan(make_client):
    """psycopg prepares a statement on its fifth run, and PostgreSQL may then keep one generic
    plan for every execution: with the statuses as parameters that plan could not use the
    partial indexes (it walked the jobs by status or account)."""
    tenant = make_client()
    _submit(tenant, ESMFOLD_JOB)
    statement = _KEY_LOOKUP_SQL.format(
        columns=", ".join(_SOURCE_COLUMNS), scope="account_id = %s AND"
    )
    numbers = iter(range(1, 10))
    prepared = re.sub("%s", lambda _: f"${next(numbers)}", statement)
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        try:
            cursor.execute(f"PREPARE key_lookup (bigint, text, bigint, text) AS {prepared}")
            cursor.execute("EXPLAIN EXECUTE key_lookup (1, 'k', 1, 'k')")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("DEALLOCATE key_lookup")
        finally:
            cursor.execute("RESET plan_cache_mode")
    assert "job_key_stored_result" in plan, plan
    assert "job_key_leader" in plan, plan
