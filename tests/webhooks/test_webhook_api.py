import uuid

import pytest
from django.db import transaction

from apps.jobs.models import Job
from apps.jobs.services import job_complete, job_start
from apps.webhooks.models import Webhook, WebhookDelivery
from apps.webhooks.signing import secret_decrypt
from tests.api.test_auth_and_errors import assert_error
from tests.webhooks.conftest import job_submit, webhook_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]

HOOK_URL = "http://127.0.0.1:9/hooks"


def test_create_shows_the_secret_once_and_stores_it_encrypted(alice):
    created = webhook_create(alice, HOOK_URL)
    assert set(created) == {
        "webhook_id",
        "url",
        "events",
        "enabled",
        "failing_since",
        "disabled_at",
        "disabled_reason",
        "secret_hint",
        "created_at",
        "secret",
        "message",
    }
    assert created["url"] == HOOK_URL
    assert created["events"] == ["job.completed", "job.failed"]
    assert created["enabled"] is True
    secret = created["secret"]
    assert secret.startswith("whsec_") and created["secret_hint"] == secret[:10]

    listed = alice.get("/v1/webhooks").json()["webhooks"]
    assert [hook["webhook_id"] for hook in listed] == [created["webhook_id"]]
    assert "secret" not in listed[0]
    assert "secret" not in alice.get(f"/v1/webhooks/{created['webhook_id']}").json()

    row = Webhook.objects.get(id=created["webhook_id"])
    assert secret not in row.secret_encrypted and secret[6:] not in row.secret_encrypted
    assert secret_decrypt(token=row.secret_encrypted) == secret


def test_events_are_checked(alice):
    every = ["job.started", "job.completed", "job.failed", "job.cancelled"]
    assert webhook_create(alice, HOOK_URL, events=every)["events"] == every
    for bad in (["job.finished"], [], "job.completed", [None]):
        response = alice.post("/v1/webhooks", json={"url": HOOK_URL, "events": bad})
        assert "events" in assert_error(response, 400)["message"]
    assert "url" in assert_error(alice.post("/v1/webhooks", json={"events": every}), 400)["message"]


def test_an_account_has_at_most_five_webhooks(alice, charlie):
    for index in range(5):
        webhook_create(alice, f"{HOOK_URL}/{index}")
    sixth = assert_error(alice.post("/v1/webhooks", json={"url": HOOK_URL}), 400)
    assert "already has 5 webhooks" in sixth["message"]
    assert Webhook.objects.filter(account=alice.account).count() == 5
    webhook_create(charlie, HOOK_URL)

    first = alice.get("/v1/webhooks").json()["webhooks"][0]["webhook_id"]
    deleted = alice.delete(f"/v1/webhooks/{first}")
    assert deleted.status_code == 200
    assert deleted.json() == {
        "success": True,
        "webhook_id": first,
        "status": "deleted",
        "message": "Webhook deleted successfully",
    }
    assert_error(alice.get(f"/v1/webhooks/{first}"), 404)
    webhook_create(alice, HOOK_URL)


def test_rotating_the_secret_shows_the_new_one_once(alice):
    created = webhook_create(alice, HOOK_URL)
    rotated = alice.post(f"/v1/webhooks/{created['webhook_id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    secret = rotated.json()["secret"]
    assert secret.startswith("whsec_") and secret != created["secret"]
    row = Webhook.objects.get(id=created["webhook_id"])
    assert secret_decrypt(token=row.secret_encrypted) == secret
    assert secret_decrypt(token=row.previous_secret_encrypted) == created["secret"]
    too_long = alice.post(
        f"/v1/webhooks/{created['webhook_id']}/rotate-secret",
        json={"previous_secret_valid_hours": 1000},
    )
    assert "previous_secret_valid_hours" in assert_error(too_long, 400)["message"]


def test_another_tenants_webhook_answers_404_everywhere(alice, charlie):
    hook_id = webhook_create(alice, HOOK_URL)["webhook_id"]
    delivery_id = alice.post(f"/v1/webhooks/{hook_id}/test").json()["delivery_id"]
    for response in (
        charlie.get(f"/v1/webhooks/{hook_id}"),
        charlie.delete(f"/v1/webhooks/{hook_id}"),
        charlie.post(f"/v1/webhooks/{hook_id}/test"),
        charlie.post(f"/v1/webhooks/{hook_id}/rotate-secret"),
        charlie.get(f"/v1/webhooks/{hook_id}/deliveries"),
        charlie.post(f"/v1/webhooks/{hook_id}/deliveries/{delivery_id}/retry"),
    ):
        assert_error(response, 404)
    # Nor does charlie reach alice's delivery through a webhook of his own.
    own_id = webhook_create(charlie, HOOK_URL)["webhook_id"]
    assert_error(charlie.post(f"/v1/webhooks/{own_id}/deliveries/{delivery_id}/retry"), 404)
    assert [hook["webhook_id"] for hook in charlie.get("/v1/webhooks").json()["webhooks"]] == [
        own_id
    ]
    assert alice.get(f"/v1/webhooks/{hook_id}").status_code == 200


def test_unknown_and_malformed_ids_answer_404(alice):
    hook_id = webhook_create(alice, HOOK_URL)["webhook_id"]
    assert_error(alice.get(f"/v1/webhooks/{uuid.uuid4()}"), 404)
    assert_error(alice.delete("/v1/webhooks/not-a-uuid"), 404)
    assert_error(alice.post(f"/v1/webhooks/{hook_id}/deliveries/{uuid.uuid4()}/retry"), 404)
    assert_error(alice.post(f"/v1/webhooks/{hook_id}/deliveries/nope/retry"), 404)


def test_events_are_written_with_the_job_change_and_roll_back_with_it(alice):
    webhook_create(alice, HOOK_URL, events=["job.started", "job.completed"])
    job_id = job_submit(alice)
    job_start(job_id=job_id)
    assert list(WebhookDelivery.objects.values_list("event", flat=True)) == ["job.started"]

    with pytest.raises(RuntimeError), transaction.atomic():
        assert job_complete(job_id=job_id, output_file="x.pdb", summary={}, metadata={})
        raise RuntimeError("the surrounding transaction fails")
    assert Job.objects.get(id=job_id).status == Job.Status.RUNNING
    assert list(WebhookDelivery.objects.values_list("event", flat=True)) == ["job.started"]

    assert job_complete(job_id=job_id, output_file="x.pdb", summary={}, metadata={})
    assert not job_complete(job_id=job_id, output_file="x.pdb", summary={}, metadata={})
    assert sorted(WebhookDelivery.objects.values_list("event", flat=True)) == [
        "job.completed",
        "job.started",
    ]


def test_the_delivery_log_pages_with_bounded_parameters(alice):
    hook_id = webhook_create(alice, HOOK_URL)["webhook_id"]
    page = alice.get(f"/v1/webhooks/{hook_id}/deliveries").json()
    assert page["pagination"] == {"total": 0, "limit": 20, "offset": 0, "has_more": False}
    for bad in ({"offset": 10**20}, {"offset": -1}, {"limit": 0}, {"limit": 101}):
        assert_error(alice.get(f"/v1/webhooks/{hook_id}/deliveries", params=bad), 400)
