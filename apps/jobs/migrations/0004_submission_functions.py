"""The submission's functions (apps.jobs.services), each one round trip.

`phonos_key_matches`: a submission's lock and its two lookups by job key.

Identical submissions must look for each other one at a time (apps.jobs.services): the account's
row lock (and, with results shared between accounts, an advisory lock on the key) is taken
before the lookups. A statement's snapshot is taken when it starts, so one statement cannot
lock and then see what the holder of the lock committed; a PL/pgSQL function can: each query in
a VOLATILE function takes a snapshot of its own, after the lock above it. The function also
keeps its plans for the session, with the statuses written in, so they use the partial indexes
`job_key_stored_result` and `job_key_leader`.

The lookups are `reusable_job_find` and `_flight_leader_find` (apps.jobs.services), which
SQLite runs as querysets: (1, the newest completed job with stored outputs) and/or (2, the
oldest job in flight that runs for itself). A change to either is a new migration replacing
these functions.

`phonos_job_submit`: a whole submission that may reuse a run, in one statement (its own
transaction in autocommit, so the account's lock is held for the server's work alone): the
same locks and lookups; where a stored result exists, nothing is written (`stored`: the caller
serves it on the general path); else the account's bounded active-job count where one is due
(`full` at the limit), the conditional debit (`short`), then the ledger entry, the job (built
from the caller's row, `jsonb_populate_record`, riding on the leader in flight if there is one)
and its first event: `leader` or `follower`, the leader's id, and the count it read.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION phonos_key_matches(
    p_account bigint, p_key varchar, p_shared boolean, p_key_lock bigint
) RETURNS TABLE (
    match integer,
    id uuid,
    outputs_of_id uuid,
    output_file varchar,
    result_summary jsonb,
    metadata jsonb,
    weights varchar
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM accounts_account AS account WHERE account.id = p_account FOR UPDATE;
    IF p_shared THEN
        PERFORM pg_advisory_xact_lock(p_key_lock);
    END IF;
    RETURN QUERY
    (SELECT 1, job.id, job.outputs_of_id, job.output_file, job.result_summary, job.metadata,
            job.weights
        FROM jobs_job AS job
        WHERE (p_shared OR job.account_id = p_account) AND job.job_key = p_key
            AND job.status = 'completed' AND job.deleted_at IS NULL AND job.output_file <> ''
        ORDER BY job.finished_at DESC LIMIT 1)
    UNION ALL
    (SELECT 2, job.id, job.outputs_of_id, job.output_file, job.result_summary, job.metadata,
            job.weights
        FROM jobs_job AS job
        WHERE (p_shared OR job.account_id = p_account) AND job.job_key = p_key
            AND job.status IN ('pending', 'running') AND job.cached_from_id IS NULL
            AND job.deleted_at IS NULL AND job.stage <> 'waiting_for_dependency'
        ORDER BY job.created_at LIMIT 1);
END;
$$
"""
SUBMIT = """
CREATE OR REPLACE FUNCTION phonos_job_submit(
    p_account bigint, p_key varchar, p_shared boolean, p_key_lock bigint, p_job jsonb,
    p_cost bigint, p_entry_kind varchar, p_entry_description varchar, p_count_limit integer
) RETURNS TABLE (outcome varchar, leader uuid, active integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_leader uuid;
    v_active integer;
    v_balance bigint;
    v_job jobs_job;
BEGIN
    PERFORM 1 FROM accounts_account AS account WHERE account.id = p_account FOR UPDATE;
    IF p_shared THEN
        PERFORM pg_advisory_xact_lock(p_key_lock);
    END IF;
    PERFORM 1 FROM jobs_job AS job
        WHERE (p_shared OR job.account_id = p_account) AND job.job_key = p_key
            AND job.status = 'completed' AND job.deleted_at IS NULL AND job.output_file <> ''
        LIMIT 1;
    IF FOUND THEN
        RETURN QUERY SELECT 'stored'::varchar, NULL::uuid, NULL::integer;
        RETURN;
    END IF;
    SELECT job.id INTO v_leader FROM jobs_job AS job
        WHERE (p_shared OR job.account_id = p_account) AND job.job_key = p_key
            AND job.status IN ('pending', 'running') AND job.cached_from_id IS NULL
            AND job.deleted_at IS NULL AND job.stage <> 'waiting_for_dependency'
        ORDER BY job.created_at LIMIT 1;
    IF p_count_limit IS NOT NULL THEN
        SELECT COUNT(*) INTO v_active FROM (
            SELECT 1 FROM jobs_job AS job
            WHERE job.account_id = p_account AND job.status IN ('pending', 'running')
            LIMIT p_count_limit + 1
        ) AS counted;
        IF v_active >= p_count_limit THEN
            RETURN QUERY SELECT 'full'::varchar, v_leader, v_active;
            RETURN;
        END IF;
    END IF;
    UPDATE accounts_account AS account SET credit_balance = account.credit_balance - p_cost
        WHERE account.id = p_account AND account.credit_balance >= p_cost
        RETURNING account.credit_balance INTO v_balance;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'short'::varchar, v_leader, v_active;
        RETURN;
    END IF;
    v_job := jsonb_populate_record(NULL::jobs_job, p_job);
    IF v_leader IS NOT NULL THEN
        v_job.cached := true;
        v_job.cached_from_id := v_leader;
        v_job.outputs_of_id := v_leader;
    END IF;
    INSERT INTO billing_ledgerentry (account_id, kind, amount, balance_after, job_id, reference,
        description, created_at)
        VALUES (p_account, p_entry_kind, -p_cost, v_balance, v_job.id, '', p_entry_description,
            v_job.created_at);
    INSERT INTO jobs_job SELECT (v_job).*;
    INSERT INTO jobs_jobevent (job_id, status, stage, progress, created_at)
        VALUES (v_job.id, v_job.status, v_job.stage, NULL, v_job.created_at);
    RETURN QUERY SELECT (CASE WHEN v_leader IS NULL THEN 'leader' ELSE 'follower' END)::varchar,
        v_leader, v_active;
END;
$$
"""
DROP_KEY_MATCHES = "DROP FUNCTION IF EXISTS phonos_key_matches(bigint, varchar, boolean, bigint)"
DROP_SUBMIT = """
DROP FUNCTION IF EXISTS phonos_job_submit(
    bigint, varchar, boolean, bigint, jsonb, bigint, varchar, varchar, integer
)
"""


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0003_lean_job_indexes"),
        ("accounts", "0001_initial"),
        ("billing", "0002_lean_ledger_indexes"),
    ]

    operations = [
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP_KEY_MATCHES)),
        migrations.RunPython(_on_postgresql(SUBMIT), _on_postgresql(DROP_SUBMIT)),
    ]
