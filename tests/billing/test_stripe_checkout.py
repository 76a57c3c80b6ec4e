"""Buying credits: the real Stripe SDK against a loopback Stripe, and signed webhooks over HTTP."""

import json
import uuid
from io import StringIO

import pytest
import requests
from django.core.management import call_command

from apps.billing.models import CheckoutSession, LedgerEntry, StripeEvent
from tests.billing.conftest import (
    STRIPE_SECRET_KEY,
    WEBHOOK_SECRET,
    checkout_event,
    send_stripe_event,
    stripe_signature,
)
from tests.conftest import parallel

pytestmark = pytest.mark.django_db(transaction=True)


def open_checkout(client, fake_stripe, pack: str = "starter") -> dict:
    response = client.post("/v1/billing/checkout", {"pack": pack})
    assert response.status_code == 201, response.text
    return fake_stripe.sessions[response.json()["session_id"]]


def assert_ledger_reconciles() -> None:
    out = StringIO()
    call_command("reconcile_ledger", stdout=out)
    assert out.getvalue().startswith("OK")


def test_packs_are_listed_with_price_and_currency(alice, fake_stripe):
    body = alice.get("/v1/billing/packs").json()
    assert body["purchases_enabled"] is True
    assert body["packs"][0] == {
        "id": "starter",
        "credits": 1000,
        "price_cents": 1000,
        "currency": "usd",
    }


def test_checkout_sends_the_pack_price_and_metadata_to_stripe(alice, fake_stripe):
    response = alice.post("/v1/billing/checkout", {"pack": "lab"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["checkout_url"].startswith("https://checkout.stripe.com/c/pay/cs_test_")

    [sent] = fake_stripe.requests
    assert sent.path == "/v1/checkout/sessions"
    assert sent.headers["Authorization"] == f"Bearer {STRIPE_SECRET_KEY}"
    assert sent.headers["Idempotency-Key"].startswith("phonos-checkout-")
    form = sent.form
    assert form["mode"] == "payment"
    assert form["line_items[0][quantity]"] == "1"
    assert form["line_items[0][price_data][unit_amount]"] == "9000"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["client_reference_id"] == str(alice.account.id)
    assert form["metadata[phonos_account_id]"] == str(alice.account.id)
    assert form["metadata[phonos_pack]"] == "lab"
    assert form["metadata[phonos_credits]"] == "10000"
    assert "{CHECKOUT_SESSION_ID}" in form["success_url"]

    checkout = CheckoutSession.objects.get(stripe_session_id=body["session_id"])
    assert (checkout.account_id, checkout.credits, checkout.amount_cents, checkout.status) == (
        alice.account.id,
        10000,
        9000,
        "open",
    )
    assert form["metadata[phonos_checkout_id]"] == str(checkout.id)
    detail = alice.get(f"/v1/billing/checkout/{body['session_id']}").json()
    assert (detail["status"], detail["credits"]) == ("open", 10000)


def test_checkout_refuses_unknown_packs_and_unconfigured_stripe(alice, fake_stripe, settings):
    response = alice.post("/v1/billing/checkout", {"pack": "platinum"})
    assert response.status_code == 400
    assert "starter" in response.json()["message"]
    settings.STRIPE_SECRET_KEY = ""
    response = alice.post("/v1/billing/checkout", {"pack": "starter"})
    assert response.status_code == 403
    assert response.json()["error"] == "Payments unavailable"
    assert fake_stripe.requests == []
    assert not CheckoutSession.objects.exists()


def test_a_paid_checkout_grants_its_credits_exactly_once(alice, fake_stripe, live_server):
    session = open_checkout(alice, fake_stripe)
    before = alice.balance()
    # Metadata is not trusted: the credits come from the checkout row Phonos wrote.
    completed = checkout_event(
        "checkout.session.completed",
        {**session, "metadata": {**session["metadata"], "phonos_credits": "999999"}},
        event_id="evt_1PhonosCompleted",
    )
    response = send_stripe_event(live_server.url, completed)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "granted"
    assert alice.balance() == before + 1000

    ledger = alice.get("/v1/billing/ledger", params={"kind": "purchase"}).json()
    [entry] = ledger["entries"]
    assert (entry["amount"], entry["reference"], entry["balance_after"]) == (
        1000,
        session["id"],
        before + 1000,
    )
    assert alice.get(f"/v1/billing/checkout/{session['id']}").json()["status"] == "completed"

    # Stripe redelivers the same event, then sends another event about the same session.
    assert send_stripe_event(live_server.url, completed).json()["outcome"] == "duplicate"
    succeeded = checkout_event(
        "checkout.session.async_payment_succeeded", session, event_id="evt_1PhonosSecond"
    )
    assert send_stripe_event(live_server.url, succeeded).json()["outcome"] == "already_granted"
    assert alice.balance() == before + 1000
    assert LedgerEntry.objects.filter(kind="purchase", reference=session["id"]).count() == 1
    assert_ledger_reconciles()


def test_a_bad_signature_is_refused_and_changes_nothing(alice, fake_stripe, live_server):
    session = open_checkout(alice, fake_stripe)
    before = alice.balance()
    event = checkout_event("checkout.session.completed", session, event_id="evt_1PhonosForged")
    payload = json.dumps(event).encode()
    url = f"{live_server.url}/stripe/webhook"
    forgeries = [
        {"Stripe-Signature": stripe_signature(payload, secret="whsec_wrong")},
        {"Stripe-Signature": stripe_signature(payload, timestamp=1_600_000_000)},
        {"Stripe-Signature": stripe_signature(payload.replace(b"evt_1", b"evt_2"))},
        {},
    ]
    for headers in forgeries:
        response = requests.post(url, data=payload, headers=headers, timeout=30)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "Bad Request"
    assert alice.balance() == before
    assert not StripeEvent.objects.exists()
    assert CheckoutSession.objects.get(stripe_session_id=session["id"]).status == "open"
    # The genuine delivery of the same event is still handled.
    assert send_stripe_event(live_server.url, event).json()["outcome"] == "granted"


def test_a_delayed_payment_grants_only_when_it_succeeds(alice, fake_stripe, live_server):
    session = open_checkout(alice, fake_stripe)
    before = alice.balance()
    completed = checkout_event(
        "checkout.session.completed", session, event_id="evt_1PhonosUnpaid", payment_status="unpaid"
    )
    assert send_stripe_event(live_server.url, completed).json()["outcome"] == "awaiting_payment"
    assert alice.balance() == before
    detail = alice.get(f"/v1/billing/checkout/{session['id']}").json()
    assert detail["status"] == "awaiting_payment"

    succeeded = checkout_event(
        "checkout.session.async_payment_succeeded", session, event_id="evt_1PhonosPaidLater"
    )
    assert send_stripe_event(live_server.url, succeeded).json()["outcome"] == "granted"
    assert alice.balance() == before + 1000
    assert_ledger_reconciles()


def test_unknown_sessions_and_other_events_grant_nothing(alice, fake_stripe, live_server):
    session = open_checkout(alice, fake_stripe)
    before = alice.balance()
    stranger = {**session, "id": "cs_test_notOurs", "metadata": {}}
    unknown = checkout_event("checkout.session.completed", stranger, event_id="evt_1PhonosStranger")
    response = send_stripe_event(live_server.url, unknown)
    assert (response.status_code, response.json()["outcome"]) == (200, "unknown_session")

    other = {**checkout_event("x", session, event_id="evt_1PhonosOther"), "type": "charge.refunded"}
    assert send_stripe_event(live_server.url, other).json()["outcome"] == "ignored"

    expired = checkout_event(
        "checkout.session.expired", session, event_id="evt_1PhonosExpired", payment_status="unpaid"
    )
    assert send_stripe_event(live_server.url, expired).json()["outcome"] == "expired"
    assert alice.get(f"/v1/billing/checkout/{session['id']}").json()["status"] == "expired"
    assert alice.balance() == before
    assert not LedgerEntry.objects.filter(kind="purchase").exists()


def test_the_ledger_is_paginated_and_private_to_its_tenant(
    alice, charlie, fake_stripe, live_server
):
    for number in range(3):
        session = open_checkout(alice, fake_stripe)
        event = checkout_event("checkout.session.completed", session, event_id=f"evt_1Page{number}")
        assert send_stripe_event(live_server.url, event).json()["outcome"] == "granted"

    first = alice.get("/v1/billing/ledger", params={"limit": 2}).json()
    assert first["pagination"] == {"total": 4, "limit": 2, "offset": 0, "has_more": True}
    rest = alice.get("/v1/billing/ledger", params={"limit": 2, "offset": 2}).json()
    assert rest["pagination"]["has_more"] is False
    kinds = [entry["kind"] for entry in first["entries"] + rest["entries"]]
    assert kinds == ["purchase", "purchase", "purchase", "grant"]

    theirs = charlie.get("/v1/billing/ledger").json()
    assert theirs["pagination"]["total"] == 1
    assert all(entry["kind"] == "grant" for entry in theirs["entries"])
    assert charlie.get(f"/v1/billing/checkout/{session['id']}").status_code == 404
    assert charlie.get("/v1/billing/ledger", params={"limit": 0}).status_code == 400
    assert_ledger_reconciles()


def test_parallel_deliveries_grant_once(alice, fake_stripe, live_server):
    session = open_checkout(alice, fake_stripe)
    before = alice.balance()
    events = [
        checkout_event("checkout.session.completed", session, event_id=f"evt_1Race{number % 3}")
        for number in range(12)
    ]
    responses = parallel(
        [lambda event=event: send_stripe_event(live_server.url, event) for event in events],
        workers=12,
    )
    assert all(response.status_code == 200 for response in responses)
    outcomes = [response.json()["outcome"] for response in responses]
    assert outcomes.count("granted") == 1
    assert alice.balance() == before + 1000
    assert StripeEvent.objects.count() == 3
    assert_ledger_reconciles()


def test_a_session_whose_creation_never_heard_back_is_still_credited(alice, live_server, settings):
    """The row is committed before Stripe is called; if the process died before storing the
    Stripe id, the completion finds the row through the checkout id in the session metadata."""
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    checkout = CheckoutSession.objects.create(
        account=alice.account, pack_id="starter", credits=1000, amount_cents=1000, currency="usd"
    )
    before = alice.balance()
    session = {"id": "cs_test_lostAnswer", "object": "checkout.session"}
    forged = checkout_event(
        "checkout.session.completed",
        {**session, "metadata": {"phonos_checkout_id": str(uuid.uuid4())}},
        event_id="evt_1PhonosWrongRow",
    )
    assert send_stripe_event(live_server.url, forged).json()["outcome"] == "unknown_session"
    event = checkout_event(
        "checkout.session.completed",
        {**session, "metadata": {"phonos_checkout_id": str(checkout.id)}},
        event_id="evt_1PhonosLostAnswer",
    )
    assert send_stripe_event(live_server.url, event).json()["outcome"] == "granted"
    checkout.refresh_from_db()
    assert (checkout.stripe_session_id, checkout.status) == ("cs_test_lostAnswer", "completed")
    assert alice.balance() == before + 1000


def test_a_stripe_outage_answers_502_and_marks_the_checkout_failed(alice, settings):
    settings.STRIPE_SECRET_KEY = STRIPE_SECRET_KEY
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # discard port: connection refused
    response = alice.post("/v1/billing/checkout", {"pack": "starter"})
    assert response.status_code == 502, response.text
    assert CheckoutSession.objects.get().status == "failed"
