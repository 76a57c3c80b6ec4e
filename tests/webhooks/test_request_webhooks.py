"""Per-request webhooks (`webhook_url` on a submission) through a real Celery worker to real
HTTP receivers on loopback, verified with the `standardwebhooks` package against the account's
webhook secret."""

import pytest
from standardwebhooks import Webhook as StandardWebhook

from apps.webhooks.models import WebhookDelivery
from tests.conftest import ESMFOLD_JOB, Client
from tests.webhooks.conftest import Receiver, queue_drained, wait_until, webhook_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]

METADATA_URL = "http://169.254.169.254/latest/meta-data/"


def account_secret(client: Client, expect: int = 201) -> str:
    response = client.post("/v1/webhooks/account-secret")
    assert response.status_code == expect, response.text
    return response.json()["secret"]


def job_deliveries(client: Client, job_id: str, count: int = 1) -> list[dict]:
    """The job's own deliveries, once `count` of them have finished."""

    def finished() -> list[dict] | None:
        response = client.get(f"/v1/jobs/{job_id}/webhook-deliveries")
        assert response.status_code == 200, response.text
        found = response.json()["deliveries"]
        done = len(found) >= count and all(d["status"] != "pending" for d in found)
        return found if done else None

    return wait_until(finished)


def cancel(client: Client, job_id: str) -> None:
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text


@pytest.mark.slow
def test_a_predicted_job_fires_one_signed_delivery_to_its_webhook_url(
    alice, charlie, receiver, start_worker, tiny_esmfold
):
    start_worker(
        queues="esmfold,light",
        PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold),
        PHONOS_WEBHOOK_ALLOW_HTTP="true",
        PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
    )
    secret = account_secret(alice)
    body = {**ESMFOLD_JOB, "webhook_url": receiver.url}
    headers = {"Idempotency-Key": "fold-with-hook"}
    first = alice.post("/v1/predict", json=body, headers=headers)
    assert first.status_code == 200, first.text
    replay = alice.post("/v1/predict", json=body, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    job_id = first.json()["job_id"]
    assert replay.json()["job_id"] == job_id

    [request] = receiver.wait_for(1, timeout=120)
    payload = StandardWebhook(secret).verify(request.body, request.headers)
    assert payload["event"] == "job.completed"
    assert payload["data"] == {
        "job_id": job_id,
        "status": "completed",
        "model": "esmfold",
        "download_url": f"/v1/jobs/{job_id}/download",
    }

    job = alice.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "completed"
    assert job["webhook_url"] == receiver.url
    assert job["webhook_events"] == ["job.completed", "job.failed", "job.cancelled"]
    [delivery] = job_deliveries(alice, job_id)
    assert delivery["delivery_id"] == request.headers["webhook-id"]
    assert (delivery["event"], delivery["status"]) == ("job.completed", "succeeded")
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [200]
    queue_drained()
    assert len(receiver.requests) == 1
    assert WebhookDelivery.objects.count() == 1

    assert charlie.get(f"/v1/jobs/{job_id}/webhook-deliveries").status_code == 404


@pytest.mark.slow
def test_cancelled_job_signed_with_a_secret_made_on_first_use_then_rotated(
    alice, charlie, receiver, hook_worker
):
    hook_worker()
    assert alice.get("/v1/webhooks/account-secret").status_code == 404
    headers = {"Idempotency-Key": "cancel-me"}
    body = {**ESMFOLD_JOB, "webhook_url": receiver.url}
    job_id = alice.post("/v1/predict", json=body, headers=headers).json()["job_id"]
    assert alice.post("/v1/predict", json=body, headers=headers).json()["job_id"] == job_id
    cancel(alice, job_id)

    [first] = receiver.wait_for(1)
    assert first.json()["event"] == "job.cancelled"
    [delivery] = job_deliveries(alice, job_id)
    assert delivery["delivery_id"] == first.headers["webhook-id"]
    hint = alice.get("/v1/webhooks/account-secret").json()["secret_hint"]
    assert hint.startswith("whsec_")

    # The secret the first delivery was signed with was never shown: rotating shows a new
    # one, and the old one keeps signing next to it, so a retry verifies with the new one.
    secret = account_secret(alice, expect=200)
    assert not secret.startswith(hint)
    retried = alice.post(f"/v1/jobs/{job_id}/webhook-deliveries/{delivery['delivery_id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["webhook_id"] is None
    second = receiver.wait_for(2)[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert len(second.headers["webhook-signature"].split()) == 2
    assert StandardWebhook(secret).verify(second.body, second.headers)["data"]["job_id"] == job_id

    # Another tenant sees none of it.
    assert charlie.get(f"/v1/jobs/{job_id}/webhook-deliveries").status_code == 404
    path = f"/v1/jobs/{job_id}/webhook-deliveries/{delivery['delivery_id']}/retry"
    assert charlie.post(path).status_code == 404
    assert charlie.get("/v1/webhooks/account-secret").status_code == 404
    queue_drained()
    assert len(receiver.requests) == 2


@pytest.mark.slow
def test_batch_items_go_to_their_own_urls(alice, receiver, hook_worker):
    hook_worker()
    other = Receiver()
    try:
        secret = account_secret(alice)
        account_hook = webhook_create(alice, receiver.url_for("/account"), events=["job.cancelled"])
        response = alice.post(
            "/v1/batch",
            json={
                "jobs": [
                    {**ESMFOLD_JOB, "webhook_url": receiver.url},
                    {**ESMFOLD_JOB, "webhook_url": other.url, "webhook_events": ["job.cancelled"]},
                    {**ESMFOLD_JOB, "webhook_url": METADATA_URL},
                    ESMFOLD_JOB,
                ]
            },
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [item["success"] for item in results] == [True, True, False, True]
        assert results[2]["message"].startswith("webhook_url: ")
        job_ids = [results[i]["job_id"] for i in (0, 1, 3)]
        for job_id in job_ids:
            cancel(alice, job_id)

        # Three account-webhook deliveries (one per job) and one per-request delivery each.
        requests = receiver.wait_for(4)
        [other_request] = other.wait_for(1)
        queue_drained()
        own = [r for r in receiver.requests if r.path == "/hooks/phonos"]
        assert [
            StandardWebhook(secret).verify(r.body, r.headers)["data"]["job_id"] for r in own
        ] == [job_ids[0]]
        assert (
            StandardWebhook(secret).verify(other_request.body, other_request.headers)["data"][
                "job_id"
            ]
            == job_ids[1]
        )
        assert len(other.requests) == 1
        account_requests = [r for r in requests if r.path == "/account"]
        verified = {
            StandardWebhook(account_hook["secret"]).verify(r.body, r.headers)["data"]["job_id"]
            for r in account_requests
        }
        assert verified == set(job_ids) and len(receiver.requests) == 4
        assert alice.get(f"/v1/jobs/{job_ids[2]}/webhook-deliveries").json()["deliveries"] == []
        assert alice.get(f"/v1/jobs/{job_ids[2]}").json()["webhook_url"] is None
    finally:
        other.stop()


@pytest.mark.slow
def test_a_pipeline_webhook_hears_both_jobs(alice, receiver, hook_worker):
    hook_worker()
    secret = account_secret(alice)
    response = alice.post(
        "/v1/pipelines",
        json={
            "fold": {"model": "esmfold", "sequence": ESMFOLD_JOB["sequence"]},
            "dock": {"model": "vina", "params": {"ligand_smiles": "CCO"}},
            "webhook_url": receiver.url,
        },
    )
    assert response.status_code == 200, response.text
    pipeline = response.json()["pipeline"]
    assert {job["webhook_url"] for job in response.json()["jobs"]} == {receiver.url}
    cancel(alice, pipeline["fold_job_id"])

    events = {
        (payload["event"], payload["data"]["job_id"])
        for request in receiver.wait_for(2)
        for payload in [StandardWebhook(secret).verify(request.body, request.headers)]
    }
    assert events == {
        ("job.cancelled", pipeline["fold_job_id"]),
        ("job.failed", pipeline["dock_job_id"]),
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"webhook_url": METADATA_URL}, "webhook_url: 169.254.169.254 is"),
        ({"webhook_url": "ftp://example.com/hook"}, "webhook_url: "),
        ({"webhook_url": 42}, "webhook_url must be a string"),
        ({"webhook_events": ["job.completed"]}, "webhook_events needs webhook_url"),
        (
            {"webhook_url": "http://127.0.0.1:9/hook", "webhook_events": ["job.exploded"]},
            "webhook_events: unknown event 'job.exploded'",
        ),
    ],
)
def test_a_refused_webhook_is_a_400_at_submission(alice, extra, message):
    before = alice.balance()
    for path, body in [
        ("/v1/predict", {**ESMFOLD_JOB, **extra}),
        (
            "/v1/pipelines",
            {
                "fold": {"model": "esmfold", "sequence": ESMFOLD_JOB["sequence"]},
                "dock": {"model": "vina", "params": {"ligand_smiles": "CCO"}},
                **extra,
            },
        ),
    ]:
        response = alice.post(path, json=body)
        assert response.status_code == 400, response.text
        assert message in response.json()["message"], response.json()
    assert alice.balance() == before
    assert alice.get("/v1/jobs").json()["pagination"]["total"] == 0


def test_private_addresses_are_refused_where_they_are_not_allowed(alice, settings):
    settings.PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    response = alice.post("/v1/predict", json={**ESMFOLD_JOB, "webhook_url": "http://127.0.0.1/x"})
    assert response.status_code == 400
    assert response.json()["message"].startswith("webhook_url: 127.0.0.1 is")
