"""`phonos_key_matches`: a submission's lock and its two lookups by job key, one round trip.

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
this function.
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
DROP = "DROP FUNCTION IF EXISTS phonos_key_matches(bigint, varchar, boolean, bigint)"


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("jobs", "0003_lean_job_indexes"), ("accounts", "0001_initial")]

    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP))]
