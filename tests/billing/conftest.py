"""A loopback stand-in for Stripe's API, and webhook events signed exactly like Stripe's.

The real `stripe` SDK is pointed at the stand-in through `STRIPE_API_BASE`, so the requests it
sends (form-encoded, with an Idempotency-Key) are the ones production sends to Stripe.
"""

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests

STRIPE_SECRET_KEY = "sk_test_phonos_0123456789"
WEBHOOK_SECRET = "whsec_phonos_test_secret_0123456789"


@dataclass
class StripeRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class FakeStripe:
    base_url: str
    requests: list[StripeRequest] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)


def _session_json(form: dict[str, str], number: int) -> dict[str, Any]:
    """What Stripe answers to POST /v1/checkout/sessions (the fields Phonos and its UI read)."""
    session_id = f"cs_test_a1{number:06d}Phonos"
    metadata = {
        key[len("metadata[") : -1]: value
        for key, value in form.items()
        if key.startswith("metadata[")
    }
    amount = int(form["line_items[0][price_data][unit_amount]"])
    return {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "cancel_url": form.get("cancel_url"),
        "client_reference_id": form.get("client_reference_id"),
        "created": int(time.time()),
        "currency": form["line_items[0][price_data][currency]"],
        "customer": None,
        "expires_at": int(time.time()) + 86400,
        "livemode": False,
        "metadata": metadata,
        "mode": form["mode"],
        "payment_intent": None,
        "payment_status": "unpaid",
        "status": "open",
        "success_url": form.get("success_url"),
        "url": f"https://checkout.stripe.com/c/pay/{session_id}#fidkdWxOYHwnPyd1blpxYHZxWjA0",
    }


@pytest.fixture
def fake_stripe(settings) -> Iterator[FakeStripe]:
    stripe = FakeStripe(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = dict(parse_qsl(body, keep_blank_values=True))
            stripe.requests.append(
                StripeRequest("POST", self.path, dict(self.headers.items()), form)
            )
            if self.path != "/v1/checkout/sessions":
                return self._answer(404, {"error": {"type": "invalid_request_error"}})
            if self.headers.get("Authorization") != f"Bearer {STRIPE_SECRET_KEY}":
                return self._answer(401, {"error": {"type": "invalid_request_error"}})
            session = _session_json(form, len(stripe.sessions) + 1)
            stripe.sessions[session["id"]] = session
            self._answer(200, session)

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", "req_phonos_test")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stripe.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    settings.STRIPE_SECRET_KEY = STRIPE_SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = stripe.base_url
    yield stripe
    server.shutdown()
    server.server_close()


def checkout_event(
    event_type: str,
    session: dict[str, Any],
    *,
    event_id: str,
    payment_status: str = "paid",
    **overrides: Any,
) -> dict[str, Any]:
    """A Stripe event about a checkout session, shaped like the ones Stripe delivers."""
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2025-10-29.clover",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {
            "object": {
                **session,
                "payment_status": payment_status,
                "status": "complete" if event_type != "checkout.session.expired" else "expired",
                "payment_intent": "pi_3PhonosTest",
                **overrides,
            }
        },
    }


def stripe_signature(
    payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def send_stripe_event(base_url: str, event: dict[str, Any], **signing: Any) -> requests.Response:
    payload = json.dumps(event).encode()
    return requests.post(
        f"{base_url}/stripe/webhook",
        data=payload,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": stripe_signature(payload, **signing),
        },
        timeout=30,
    )
