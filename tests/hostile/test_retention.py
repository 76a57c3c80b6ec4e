"""Tables that would grow forever are pruned (command and beat task), and an account can be
deleted: keys, jobs, S3 objects, webhooks and usage go; the ledger stays, anonymised, and
still reconciles. Real PostgreSQL, Redis, SeaweedFS, HTTP and worker processes."""

import io
import json
import re
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from apps.accounts.models import Account, ApiKey, User
from apps.billing.models import LedgerEntry
from apps.common.counters import counters_flush
from apps.jobs.catalog import submission_clean
from apps.jobs.models import IdempotencyRecord, Job, JobEvent
from apps.jobs.services import job_complete, job_start, job_submit
from apps.jobs.storage import get_storage
from apps.usage.models import UsageCounter
from apps.usage.services import usage_fold
from apps.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery
from tests.conftest import ESMFOLD_JOB, s3_client
from tests.hostile.test_bounds import _webhook
from tests.workers.fake_diffdock import fake_diffdock
from tests.workers.test_docking import LIGAND, PROTEIN_PDB, wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)


def _age(queryset, **delta: float) -> None:
    """Backdate rows (their created_at is written by auto_now_add)."""
    queryset.update(created_at=timezone.now() - timedelta(**delta))


def _tables(account: Account) -> dict:
    """One row of each kind past its retention and one within it (or never pruned)."""
    api_key = account.api_keys.get()
    submission = submission_clean(ESMFOLD_JOB)
    finished = job_submit(account=account, api_key=api_key, submission=submission)
    job_start(job_id=finished.id)
    job_complete(job_id=finished.id, output_file="x.pdb", summary={}, metadata={})
    # Its own run, not the finished job's result reused.
    running = job_submit(account=account, api_key=api_key, submission=submission, use_cache=False)
    job_start(job_id=running.id)
    _age(JobEvent.objects.all(), days=31)
    recent_event = JobEvent.objects.create(job=finished, status="completed", stage="done")

    for key in ("old", "new"):
        IdempotencyRecord.objects.create(
            account=account, key=key, request_hash="0" * 64, status_code=200, response_body={}
        )
    _age(IdempotencyRecord.objects.filter(key="old"), hours=25)

    webhook = _webhook(account)
    deliveries = {}
    for name, status in (("old", "succeeded"), ("new", "failed"), ("pending", "pending")):
        deliveries[name] = WebhookDelivery.objects.create(
            account=account,
            webhook=webhook,
            event="job.completed",
            payload="{}",
            status=status,
            max_attempts=3,
        )
        WebhookAttempt.objects.create(
            delivery=deliveries[name], number=1, attempted_at=timezone.now(), succeeded=True
        )
    old_finish = timezone.now() - timedelta(days=31)
    WebhookDelivery.objects.filter(id__in=[deliveries["old"].id, deliveries["pending"].id]).update(
        finished_at=old_finish, created_at=old_finish
    )
    WebhookDelivery.objects.filter(id=deliveries["new"].id).update(finished_at=timezone.now())

    for days in (91, 89):
        UsageCounter.objects.create(
            account=account,
            api_key_id=api_key.id,
            date=(timezone.now() - timedelta(days=days)).date(),
            endpoint=f"/v1/{days}",
            requests=1,
            latency_ms_sum=1.0,
        )
    return {
        "running": running,
        "recent_event": recent_event,
        "deliveries": deliveries,
    }


def _assert_pruned(rows: dict) -> None:
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    # Old events of the finished job go; the running job's stay whatever their age.
    assert set(JobEvent.objects.values_list("id", flat=True)) == {
        rows["recent_event"].id,
        *JobEvent.objects.filter(job=rows["running"]).values_list("id", flat=True),
    }
    assert JobEvent.objects.filter(job=rows["running"]).count() == 2
    kept = {rows["deliveries"]["new"].id, rows["deliveries"]["pending"].id}
    assert set(WebhookDelivery.objects.values_list("id", flat=True)) == kept
    assert set(WebhookAttempt.objects.values_list("delivery_id", flat=True)) == kept
    assert list(UsageCounter.objects.values_list("endpoint", flat=True)) == ["/v1/89"]


def test_phonos_prune_deletes_what_is_past_retention_in_batches(alice):
    rows = _tables(alice.account)
    out = io.StringIO()
    call_command("phonos_prune", "--batch-size", "1", stdout=out)
    assert json.loads(out.getvalue()) == {
        "idempotency_records": 1,
        "job_events": 3,
        "webhook_deliveries": 1,
        "usage_records": 1,
    }
    _assert_pruned(rows)
    again = io.StringIO()
    call_command("phonos_prune", stdout=again)
    assert set(json.loads(again.getvalue()).values()) == {0}


@pytest.mark.slow
def test_the_beat_task_prunes_on_the_light_queue(alice, start_worker):
    rows = _tables(alice.account)
    start_worker(queues="light", beat=True, PHONOS_RETENTION_INTERVAL_SECONDS="1")
    deadline = time.monotonic() + 30
    while UsageCounter.objects.count() != 1 or IdempotencyRecord.objects.count() != 1:
        assert time.monotonic() < deadline, "the retention task never ran"
        time.sleep(0.2)
    _assert_pruned(rows)


def test_usage_answers_at_most_90_days(alice):
    api_key = alice.account.api_keys.get()
    UsageCounter.objects.create(
        account=alice.account,
        api_key_id=api_key.id,
        date=(timezone.now() - timedelta(days=95)).date(),
        endpoint="/v1/old",
        requests=1,
        latency_ms_sum=1.0,
    )
    body = alice.get("/v1/usage", params={"days": 90}).json()
    assert "/v1/old" not in {row["endpoint"] for row in body["by_endpoint"]}
    assert alice.get("/v1/usage", params={"days": 91}).status_code == 400


# --- Account deletion ----------------------------------------------------------------------------


def _s3_keys(s3_storage: dict, prefix: str) -> list[str]:
    s3 = s3_client(s3_storage["PHONOS_S3_ENDPOINT_URL"])
    listing = s3.list_objects_v2(
        Bucket=s3_storage["PHONOS_S3_BUCKET"], Prefix=get_storage().prefix + prefix
    )
    return [item["Key"] for item in listing.get("Contents", [])]


def _dashboard_session(live_server, client, account: Account, password: str) -> requests.Session:
    user = User.objects.create_user(
        username=f"{account.username}-web", password=password, account=account
    )
    client.force_login(user)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    return session


def _delete_via_dashboard(session: requests.Session, base_url: str, password: str):
    page = session.get(f"{base_url}/dashboard/account/delete/")
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return session.post(
        f"{base_url}/dashboard/account/delete/",
        data={"csrfmiddlewaretoken": token, "password": password},
        allow_redirects=False,
    )


def _slow_diffdock(directory: Path) -> Path:
    """The stand-in DiffDock, taking a few seconds: long enough to delete the account under it."""
    installation = fake_diffdock(directory)
    script = installation / "inference.py"
    script.write_text("import time\ntime.sleep(4)\n" + script.read_text())
    return installation


@pytest.mark.slow
def test_deleting_an_account_removes_its_data_and_keeps_the_books(
    alice, charlie, live_server, client, start_worker, s3_storage, tmp_path
):
    account = alice.account
    worker = start_worker(
        queues="diffdock",
        PHONOS_DIFFDOCK_DIR=str(_slow_diffdock(tmp_path / "DiffDock")),
        PHONOS_DIFFDOCK_PYTHON=sys.executable,
        **s3_storage,
    )
    # A finished job with outputs in S3, a job running on the worker, a webhook, usage.
    api_key = account.api_keys.get()
    done = job_submit(account=account, api_key=api_key, submission=submission_clean(ESMFOLD_JOB))
    job_start(job_id=done.id)
    output = tmp_path / "out.pdb"
    output.write_text("ATOM      1  CA  MET A   1       0.000   0.000   0.000  1.00 87.50  C\n")
    get_storage().put_file(f"accounts/{account.id}/jobs/{done.id}/{done.id}.pdb", output, "x")
    job_complete(job_id=done.id, output_file=f"{done.id}.pdb", summary={}, metadata={})
    running_id = alice.post(
        "/v1/predict",
        json={"model": "diffdock", "sequence": LIGAND, "params": {"protein_pdb": PROTEIN_PDB}},
    ).json()["job_id"]
    wait_for_status(alice, running_id, {"running"})
    _webhook(account)
    charlie_job = charlie.post("/v1/predict", json=ESMFOLD_JOB).json()["job_id"]
    assert _s3_keys(s3_storage, f"accounts/{account.id}/")
    counters_flush()  # the requests above, counted in Redis until the beat task folds them
    usage_fold()
    assert UsageCounter.objects.filter(account=account).exists()

    password = "a long enough password 7"
    session = _dashboard_session(live_server, client, account, password)
    assert _delete_via_dashboard(session, live_server.url, "wrong").status_code == 400
    assert alice.get("/v1/account").status_code == 200
    deleted = _delete_via_dashboard(session, live_server.url, password)
    assert deleted.status_code == 302 and deleted.headers["Location"].endswith("/login/")

    # The worker still running the cancelled job finishes (or is stopped) and writes nothing.
    deadline = time.monotonic() + 60
    while not re.search(rf"run_job\[{running_id}\] (succeeded|raised)|Terminat", worker.log()):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    assert _s3_keys(s3_storage, f"accounts/{account.id}/") == []

    assert alice.get("/v1/account").status_code == 401
    assert not ApiKey.objects.filter(account_id=account.id).exists()
    assert not User.objects.filter(account_id=account.id).exists()
    assert not Job.objects.filter(account_id=account.id).exists()
    assert not Webhook.objects.filter(account_id=account.id).exists()
    assert not UsageCounter.objects.filter(account_id=account.id).exists()
    tombstone = Account.objects.get(id=account.id)
    assert "alice" not in tombstone.username and "alice" not in tombstone.email
    assert tombstone.credit_balance == 0
    kinds = list(
        LedgerEntry.objects.filter(account_id=account.id)
        .order_by("id")
        .values_list("kind", "amount")
    )
    # Granted 1000, charged 10 + 30, the running job refunded 30, the rest forfeited.
    assert kinds == [
        ("grant", 1000),
        ("job_debit", -10),
        ("job_debit", -30),
        ("refund", 30),
        ("adjustment", -990),
    ]
    out = io.StringIO()
    call_command("reconcile_ledger", stdout=out)
    assert out.getvalue().startswith("OK")
    assert charlie.get(f"/v1/jobs/{charlie_job}").status_code == 200


def test_the_operator_command_deletes_an_account_and_is_safe_to_repeat(alice):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--yes"):
        call_command("phonos_account_delete", "--account", str(alice.account.id))
    assert alice.get("/v1/account").status_code == 200
    for _ in range(2):
        out = io.StringIO()
        call_command(
            "phonos_account_delete", "--account", str(alice.account.id), "--yes", stdout=out
        )
    assert json.loads(out.getvalue())["credits_forfeited"] == 0
    assert alice.get("/v1/account").status_code == 401
    call_command("reconcile_ledger", stdout=io.StringIO())
