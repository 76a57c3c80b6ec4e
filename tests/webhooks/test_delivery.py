"""Deliveries through a real Celery worker process to a real HTTP receiver on loopback."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks import WebhookVerificationError

from apps.jobs.services import job_complete, job_fail, job_start
from apps.webhooks.models import Webhook, WebhookDelivery
from phonos.celery import app as celery_app
from tests.webhooks.conftest import (
    deliveries,
    finished_deliveries,
    job_submit,
    queue_drained,
    wait_until,
    webhook_create,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_a_completed_job_fires_one_signed_job_completed_event(alice, receiver, hook_worker):
    hook_worker()
    webhook = webhook_create(alice, receiver.url)
    job_id = job_submit(alice)
    job_start(job_id=job_id)
    assert job_complete(job_id=job_id, output_file=f"{job_id}.pdb", summary={}, metadata={})

    [request] = receiver.wait_for(1)
    payload = StandardWebhook(webhook["secret"]).verify(request.body, request.headers)
    assert payload == {
        "event": "job.completed",
        "timestamp": payload["timestamp"],
        "data": {
            "job_id": job_id,
            "status": "completed",
            "model": "esmfold",
            "download_url": f"/v1/jobs/{job_id}/download",
        },
    }
    assert TIMESTAMP.match(payload["timestamp"])
    assert request.path == "/hooks/phonos"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Host"] == receiver.url.split("/")[2]

    [delivery] = finished_deliveries(alice, webhook["webhook_id"])
    assert delivery["delivery_id"] == request.headers["webhook-id"]
    assert (delivery["event"], delivery["status"], delivery["next_retry_at"]) == (
        "job.completed",
        "succeeded",
        None,
    )
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200 and attempt["succeeded"] is True
    assert attempt["latency_ms"] is not None and attempt["error"] == ""
    assert attempt["response"] == "received"
    queue_drained()
    assert len(receiver.requests) == 1


def test_a_failing_receiver_gets_retries_with_the_same_webhook_id(alice, receiver, hook_worker):
    hook_worker()
    receiver.respond_with(500, 500, 200)
    webhook = webhook_create(alice, receiver.url, events=["job.failed"])
    job_id = job_submit(alice)
    job_start(job_id=job_id)
    assert job_fail(job_id=job_id, error="out of memory")

    requests = receiver.wait_for(3)
    [delivery] = finished_deliveries(alice, webhook["webhook_id"])
    assert len(receiver.requests) == 3
    assert {request.headers["webhook-id"] for request in requests} == {delivery["delivery_id"]}
    assert len({request.body for request in requests}) == 1
    for request in requests:
        verified = StandardWebhook(webhook["secret"]).verify(request.body, request.headers)
        assert verified["event"] == "job.failed"
        assert verified["data"] == {
            "job_id": job_id,
            "status": "failed",
            "model": "esmfold",
            "download_url": None,
        }

    assert (delivery["status"], delivery["attempt_count"]) == ("succeeded", 3)
    attempts = delivery["attempts"]
    assert [attempt["attempt"] for attempt in attempts] == [1, 2, 3]
    assert [attempt["status_code"] for attempt in attempts] == [500, 500, 200]
    assert [attempt["error"] for attempt in attempts] == ["HTTP 500", "HTTP 500", ""]
    assert [attempt["response"] for attempt in attempts] == ["not today", "not today", "received"]
    assert all(attempt["latency_ms"] is not None for attempt in attempts)
    assert attempts[0]["next_retry_at"] and attempts[1]["next_retry_at"]
    assert attempts[2]["next_retry_at"] is None
    assert alice.get(f"/v1/webhooks/{webhook['webhook_id']}").json()["failing_since"] is None


def test_the_test_endpoint_delivers_a_test_event(alice, receiver, hook_worker):
    hook_worker()
    webhook = webhook_create(alice, receiver.url)
    response = alice.post(f"/v1/webhooks/{webhook['webhook_id']}/test")
    assert response.status_code == 200, response.text
    queued = response.json()
    assert queued == {
        "success": True,
        "webhook_id": webhook["webhook_id"],
        "delivery_id": queued["delivery_id"],
        "event": "webhook.test",
        "status": "pending",
        "message": "Test event queued for delivery",
    }

    [request] = receiver.wait_for(1)
    payload = StandardWebhook(webhook["secret"]).verify(request.body, request.headers)
    assert payload["event"] == "webhook.test"
    assert set(payload["data"]) == {"job_id", "status", "model", "download_url"}
    assert request.headers["webhook-id"] == queued["delivery_id"]
    [delivery] = finished_deliveries(alice, webhook["webhook_id"])
    assert (delivery["delivery_id"], delivery["status"]) == (queued["delivery_id"], "succeeded")


def test_job_started_is_sent_for_the_first_start_only_and_cancel_is_announced(
    alice, receiver, hook_worker
):
    hook_worker()
    every = ["job.started", "job.completed", "job.failed", "job.cancelled"]
    webhook = webhook_create(alice, receiver.url, events=every)
    finished = job_submit(alice)
    job_start(job_id=finished)
    # The worker died; another one runs the job again: running → running is not announced.
    assert job_start(job_id=finished) is not None
    job_complete(job_id=finished, output_file=f"{finished}.pdb", summary={}, metadata={})
    cancelled = job_submit(alice)
    assert alice.post(f"/v1/jobs/{cancelled}/cancel").status_code == 200

    finished_deliveries(alice, webhook["webhook_id"], count=3)
    queue_drained()
    received = sorted(
        (body["data"]["job_id"], body["event"], body["data"]["status"])
        for body in (
            StandardWebhook(webhook["secret"]).verify(request.body, request.headers)
            for request in receiver.requests
        )
    )
    assert received == sorted(
        [
            (finished, "job.started", "running"),
            (finished, "job.completed", "completed"),
            (cancelled, "job.cancelled", "cancelled"),
        ]
    )


def test_a_delivery_whose_publication_was_lost_is_sent_by_the_sweeper(
    alice, receiver, hook_worker, monkeypatch
):
    hook_worker()
    webhook = webhook_create(alice, receiver.url)
    # The process dies between commit and publish: the outbox row is all that is left.
    monkeypatch.setattr("apps.webhooks.services.webhook_delivery_enqueue", lambda **kwargs: False)
    job_id = job_submit(alice)
    job_start(job_id=job_id)
    job_complete(job_id=job_id, output_file="out.pdb", summary={}, metadata={})
    monkeypatch.undo()
    queue_drained()
    assert receiver.requests == []
    delivery = WebhookDelivery.objects.get(webhook_id=webhook["webhook_id"])
    assert delivery.status == WebhookDelivery.Status.PENDING

    # Shortly past due, the task that was published may still be on its way: left alone.
    celery_app.send_task("apps.webhooks.tasks.webhook_deliveries_sweep", queue="light")
    queue_drained()
    assert receiver.requests == []

    WebhookDelivery.objects.filter(id=delivery.id).update(
        next_attempt_at=timezone.now() - timedelta(minutes=5)
    )
    for _ in range(3):
        celery_app.send_task("apps.webhooks.tasks.webhook_deliveries_sweep", queue="light")
    [request] = receiver.wait_for(1)
    assert request.headers["webhook-id"] == str(delivery.id)
    StandardWebhook(webhook["secret"]).verify(request.body, request.headers)
    finished_deliveries(alice, webhook["webhook_id"])
    queue_drained()
    assert len(receiver.requests) == 1


def test_a_delivery_that_never_succeeds_fails_and_can_be_retried_by_hand(
    alice, receiver, hook_worker, settings
):
    settings.PHONOS_WEBHOOK_RETRY_SCHEDULE = [0.2, 0.2]
    hook_worker(PHONOS_WEBHOOK_RETRY_SCHEDULE="0.2,0.2")
    receiver.respond_with(503, 503, 503)
    webhook = webhook_create(alice, receiver.url)
    job_id = job_submit(alice)
    job_start(job_id=job_id)
    job_complete(job_id=job_id, output_file="out.pdb", summary={}, metadata={})

    [delivery] = finished_deliveries(alice, webhook["webhook_id"])
    assert (delivery["status"], delivery["attempt_count"], delivery["next_retry_at"]) == (
        "failed",
        3,
        None,
    )
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [503, 503, 503]
    assert alice.get(f"/v1/webhooks/{webhook['webhook_id']}").json()["failing_since"]

    retried = alice.post(
        f"/v1/webhooks/{webhook['webhook_id']}/deliveries/{delivery['delivery_id']}/retry"
    )
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending"
    wait_until(lambda: deliveries(alice, webhook["webhook_id"])[0]["status"] == "succeeded")
    [delivery] = deliveries(alice, webhook["webhook_id"])
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [503, 503, 503, 200]
    assert {request.headers["webhook-id"] for request in receiver.requests} == {
        delivery["delivery_id"]
    }
    assert alice.get(f"/v1/webhooks/{webhook['webhook_id']}").json()["failing_since"] is None


def test_redirects_are_not_followed(alice, receiver, hook_worker):
    hook_worker()
    receiver.respond_with(302)
    webhook = webhook_create(alice, receiver.url)
    alice.post(f"/v1/webhooks/{webhook['webhook_id']}/test")
    [delivery] = finished_deliveries(alice, webhook["webhook_id"])
    assert [request.path for request in receiver.requests] == ["/hooks/phonos"] * 2
    first, second = delivery["attempts"]
    assert first["status_code"] == 302 and "redirects are not followed" in first["error"]
    assert second["status_code"] == 200


def test_an_endpoint_failing_for_days_is_disabled_until_a_test_succeeds(
    alice, receiver, hook_worker
):
    hook_worker()
    receiver.respond_with(500)
    webhook = webhook_create(alice, receiver.url)
    hook_id = webhook["webhook_id"]
    Webhook.objects.filter(id=hook_id).update(failing_since=timezone.now() - timedelta(days=6))

    alice.post(f"/v1/webhooks/{hook_id}/test")
    [delivery] = finished_deliveries(alice, hook_id)
    assert (delivery["status"], delivery["attempt_count"]) == ("failed", 1)
    shown = alice.get(f"/v1/webhooks/{hook_id}").json()
    assert shown["enabled"] is False and shown["disabled_at"]
    assert "120 hours" in shown["disabled_reason"]

    # A disabled endpoint is sent no events.
    job_id = job_submit(alice)
    job_start(job_id=job_id)
    job_complete(job_id=job_id, output_file="out.pdb", summary={}, metadata={})
    assert not WebhookDelivery.objects.filter(webhook_id=hook_id, event="job.completed").exists()

    alice.post(f"/v1/webhooks/{hook_id}/test")
    finished_deliveries(alice, hook_id, count=2)
    shown = alice.get(f"/v1/webhooks/{hook_id}").json()
    assert (shown["enabled"], shown["disabled_at"], shown["failing_since"]) == (True, None, None)


def test_a_rotated_secret_signs_next_to_the_new_one_until_retired(alice, receiver, hook_worker):
    hook_worker()
    webhook = webhook_create(alice, receiver.url)
    hook_id = webhook["webhook_id"]
    old_secret = webhook["secret"]
    new_secret = alice.post(f"/v1/webhooks/{hook_id}/rotate-secret").json()["secret"]

    alice.post(f"/v1/webhooks/{hook_id}/test")
    [during_grace] = receiver.wait_for(1)
    assert len(during_grace.headers["webhook-signature"].split(" ")) == 2
    for secret in (old_secret, new_secret):
        StandardWebhook(secret).verify(during_grace.body, during_grace.headers)

    newest = alice.post(
        f"/v1/webhooks/{hook_id}/rotate-secret", json={"previous_secret_valid_hours": 0}
    ).json()["secret"]
    alice.post(f"/v1/webhooks/{hook_id}/test")
    after = receiver.wait_for(2)[1]
    StandardWebhook(newest).verify(after.body, after.headers)
    for retired in (old_secret, new_secret):
        with pytest.raises(WebhookVerificationError):
            StandardWebhook(retired).verify(after.body, after.headers)
