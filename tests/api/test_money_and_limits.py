"""Credits, idempotency and rate limits under real concurrency, over HTTP on PostgreSQL."""

import json
import os
import subprocess
import sys
from functools import partial

import pytest
import requests
from django.core.management import call_command
from django.db.models import Min, Sum

from apps.accounts.models import Account
from apps.billing.models import LedgerEntry
from apps.jobs.models import Job
from tests.api.test_auth_and_errors import assert_error
from tests.conftest import ESMFOLD_JOB, parallel, worker_environment

pytestmark = pytest.mark.django_db(transaction=True)


def assert_ledger_balances(account: Account) -> None:
    account.refresh_from_db()
    entries = LedgerEntry.objects.filter(account=account)
    assert account.credit_balance == entries.aggregate(total=Sum("amount"))["total"]
    assert entries.aggregate(lowest=Min("balance_after"))["lowest"] >= 0


def test_parallel_submissions_spend_exactly_what_the_account_can_afford(make_client):
    tenant = make_client(credits=235)  # 23 ESMFold jobs of 10 credits, 5 left over
    responses = parallel([partial(tenant.post, "/v1/predict", ESMFOLD_JOB)] * 60, workers=30)
    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(200) == 23, statuses
    assert statuses.count(402) == 37, statuses
    assert tenant.balance() == 5
    assert Job.objects.filter(account=tenant.account).count() == 23
    assert_ledger_balances(tenant.account)
    call_command("reconcile_ledger")


def test_the_rate_limit_lets_exactly_the_limit_through_in_parallel(make_client):
    tenant = make_client(rate_limit=10)
    responses = parallel([partial(tenant.get, "/v1/models")] * 30, workers=30)
    ok = [response for response in responses if response.status_code == 200]
    limited = [response for response in responses if response.status_code == 429]
    assert (len(ok), len(limited)) == (10, 20)
    body = assert_error(limited[0], 429)
    assert body == {
        "error": "Rate limit exceeded",
        "message": "You have exceeded the rate limit of 10 requests per minute",
        "reason": "rate_limit",
    }
    assert 1 <= int(limited[0].headers["Retry-After"]) <= 60
    assert limited[0].headers["RateLimit-Remaining"] == "0"
    assert sorted(int(response.headers["RateLimit-Remaining"]) for response in ok) == list(
        range(10)
    )
    assert all(response.headers["RateLimit-Limit"] == "10" for response in responses)


def test_rate_limits_are_per_key(make_client):
    first, second = make_client(rate_limit=2), make_client(rate_limit=2)
    assert [first.get("/v1/models").status_code for _ in range(3)] == [200, 200, 429]
    assert second.get("/v1/models").status_code == 200


def test_idempotency_key_replays_the_first_response_and_charges_once(alice):
    headers = {"Idempotency-Key": "run-42"}
    first = alice.post("/v1/predict", ESMFOLD_JOB, headers=headers)
    second = alice.post("/v1/predict", ESMFOLD_JOB, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert alice.balance() == 990
    other_body = alice.post("/v1/predict", {**ESMFOLD_JOB, "name": "other"}, headers=headers)
    assert "different request body" in assert_error(other_body, 409)["message"]
    assert alice.balance() == 990


def test_parallel_requests_with_one_idempotency_key_create_one_job(alice):
    call = partial(alice.post, "/v1/predict", ESMFOLD_JOB, headers={"Idempotency-Key": "same"})
    responses = parallel([call] * 12, workers=12)
    assert {response.status_code for response in responses} == {200}
    assert len({response.json()["job_id"] for response in responses}) == 1
    assert Job.objects.filter(account=alice.account).count() == 1
    assert alice.balance() == 990


def test_idempotency_keys_belong_to_one_tenant(alice, charlie):
    headers = {"Idempotency-Key": "shared-name"}
    mine = alice.post("/v1/predict", ESMFOLD_JOB, headers=headers).json()["job_id"]
    theirs = charlie.post("/v1/predict", ESMFOLD_JOB, headers=headers).json()["job_id"]
    assert mine != theirs


def test_a_refused_request_does_not_burn_its_idempotency_key(make_client):
    tenant = make_client(credits=5)
    headers = {"Idempotency-Key": "retry-me"}
    assert tenant.post("/v1/predict", ESMFOLD_JOB, headers=headers).status_code == 402
    call_command("phonos_account", "grant", "--account", str(tenant.account.id), "--credits", "20")
    assert tenant.post("/v1/predict", ESMFOLD_JOB, headers=headers).status_code == 200
    assert tenant.balance() == 15


def test_batch_reports_each_item_and_charges_only_successes(make_client):
    tenant = make_client(credits=25)
    response = tenant.post(
        "/v1/batch",
        {
            "jobs": [
                {**ESMFOLD_JOB, "name": "Protein 1"},
                {"model": "esmfold", "sequence": "MKT!"},
                {**ESMFOLD_JOB, "name": "Protein 2"},
                {**ESMFOLD_JOB, "name": "Protein 3"},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is False
    assert body["summary"] == {"total": 4, "successful": 2, "failed": 2, "total_credits_used": 20}
    results = body["results"]
    assert [item["success"] for item in results] == [True, False, True, False]
    assert [item["charged"] for item in results] == [True, False, True, False]
    assert results[1]["error"] == "Bad Request" and "sequence" in results[1]["message"]
    assert results[3]["error"] == "Insufficient credits"
    assert tenant.balance() == 5
    assert_ledger_balances(tenant.account)


def test_batch_of_all_good_jobs_matches_the_contract(alice):
    body = alice.post("/v1/batch", {"jobs": [ESMFOLD_JOB, ESMFOLD_JOB]}).json()
    assert body["success"] is True
    assert body["summary"] == {"total": 2, "successful": 2, "failed": 0, "total_credits_used": 20}
    assert [item["index"] for item in body["results"]] == [0, 1]
    assert all(item["credits_used"] == 10 for item in body["results"])


@pytest.mark.parametrize("payload", [{}, {"jobs": []}, {"jobs": "x"}, {"jobs": [ESMFOLD_JOB] * 11}])
def test_bad_batches_get_400(alice, payload):
    assert_error(alice.post("/v1/batch", payload), 400)
    assert alice.balance() == 1000


def test_batch_idempotency(alice):
    headers = {"Idempotency-Key": "batch-1"}
    first = alice.post("/v1/batch", {"jobs": [ESMFOLD_JOB]}, headers=headers).json()
    again = alice.post("/v1/batch", {"jobs": [ESMFOLD_JOB]}, headers=headers).json()
    assert first == again
    assert alice.balance() == 990


def test_validate_prices_a_request_without_creating_or_charging(alice):
    valid = alice.post("/v1/validate", {**ESMFOLD_JOB, "model": "alphafold2"}).json()
    assert valid == {
        "valid": True,
        "errors": [],
        "model": "alphafold2",
        "sequence_length": 34,
        "credits_cost": 50,
        "credits_balance": 1000,
        "sufficient_credits": True,
    }
    invalid = alice.post("/v1/validate", {"model": "esmfold", "sequence": "MK1"}).json()
    assert invalid["valid"] is False and "position 3" in invalid["errors"][0]
    assert invalid["credits_cost"] == 10
    assert Job.objects.count() == 0
    assert alice.balance() == 1000


def test_usage_counts_requests_credits_and_latency(alice):
    alice.post("/v1/predict", ESMFOLD_JOB)
    alice.post("/v1/predict", {**ESMFOLD_JOB, "model": "alphafold2"})
    alice.get("/v1/models")
    usage = alice.get("/v1/usage", params={"days": 7}).json()
    assert usage["period"]["days"] == 7
    assert usage["totals"]["requests"] == 3
    assert usage["totals"]["credits_used"] == 60
    assert usage["totals"]["avg_response_time_ms"] > 0
    by_endpoint = {row["endpoint"]: row for row in usage["by_endpoint"]}
    assert by_endpoint["/v1/predict"] == {
        "endpoint": "/v1/predict",
        "requests": 2,
        "credits_used": 60,
    }
    assert {row["model"]: row["credits_used"] for row in usage["by_model"]} == {
        "esmfold": 10,
        "alphafold2": 50,
    }
    assert usage["daily"][-1]["requests"] == 3
    assert_error(alice.get("/v1/usage", params={"days": 91}), 400)
    assert_error(alice.get("/v1/usage", params={"days": 0}), 400)


def test_reconcile_ledger_fails_when_a_balance_drifts(alice):
    call_command("reconcile_ledger")
    Account.objects.filter(id=alice.account.id).update(credit_balance=999_999)
    with pytest.raises(Exception, match="do not reconcile"):
        call_command("reconcile_ledger")


def test_operator_commands_create_accounts_and_keys(live_server):
    def manage(*args: str) -> dict:
        completed = subprocess.run(
            [sys.executable, "manage.py", *args],
            capture_output=True,
            text=True,
            check=True,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "tests.settings",
                "DATABASE_URL": _test_database_url(),
            },
        )
        return json.loads(completed.stdout)

    created = manage("phonos_account", "create", "--email", "lab@example.org", "--credits", "70")
    assert created["credits"] == 70 and created["api_key"].startswith("pk_")
    granted = manage("phonos_account", "grant", "--email", "lab@example.org", "--credits", "30")
    assert granted["balance"] == 100
    second = manage(
        "phonos_key", "create", "--account", str(created["account_id"]), "--rate-limit", "7"
    )
    response = requests.get(
        f"{live_server.url}/v1/account", headers={"Authorization": f"Bearer {second['api_key']}"}
    )
    assert response.json()["credits"]["balance"] == 100
    assert response.headers["RateLimit-Limit"] == "7"
    manage("phonos_key", "revoke", "--prefix", second["api_key_prefix"])
    revoked = requests.get(
        f"{live_server.url}/v1/account", headers={"Authorization": f"Bearer {second['api_key']}"}
    )
    assert revoked.status_code == 401
    assert LedgerEntry.objects.filter(account_id=created["account_id"], kind="grant").count() == 2


def _test_database_url() -> str:
    return worker_environment()["DATABASE_URL"]


def test_production_refuses_to_start_without_postgres_and_redis(tmp_path):
    completed = subprocess.run(
        [sys.executable, "manage.py", "check"],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "PHONOS_ENV": "production",
            "SECRET_KEY": "x",
            "PHONOS_VAR_DIR": str(tmp_path),
        },
    )
    assert completed.returncode != 0
    assert "DATABASE_URL" in completed.stderr and "REDIS_URL" in completed.stderr
