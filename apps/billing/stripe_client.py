"""The only module that talks to Stripe, through the official SDK.

`STRIPE_API_BASE` points the SDK elsewhere (tests run a local stand-in for Stripe's API).
"""

import stripe
from django.conf import settings
from stripe.params.checkout import SessionCreateParams

from apps.common.exceptions import ApplicationError, InvalidInput


class PaymentsNotConfigured(ApplicationError):
    # A 4xx: the deployment does not sell credits, and retrying will not change that.
    status_code = 403
    error = "Payments unavailable"


class PaymentProviderError(ApplicationError):
    status_code = 502
    error = "Payment provider error"


def _client() -> stripe.StripeClient:
    if not settings.STRIPE_SECRET_KEY:
        raise PaymentsNotConfigured("Buying credits is not enabled on this Phonos deployment")
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=2,
    )


def stripe_checkout_session_open(
    *, params: SessionCreateParams, idempotency_key: str
) -> stripe.checkout.Session:
    """Create a Checkout Session; the idempotency key makes the SDK's retries open only one."""
    client = _client()
    try:
        return client.v1.checkout.sessions.create(
            params=params, options={"idempotency_key": idempotency_key}
        )
    except stripe.StripeError as error:
        raise PaymentProviderError(
            f"Stripe could not open a checkout session: {error.user_message or 'try again later'}"
        ) from error


def stripe_event_verify(*, payload: bytes, signature: str) -> stripe.Event:
    """Check the `Stripe-Signature` header against `STRIPE_WEBHOOK_SECRET` (and its age)."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise PaymentsNotConfigured("STRIPE_WEBHOOK_SECRET is not set; the event was not handled")
    try:
        event: stripe.Event = stripe.Webhook.construct_event(
            payload, signature, settings.STRIPE_WEBHOOK_SECRET
        )
        return event
    except stripe.SignatureVerificationError:
        raise InvalidInput("The Stripe-Signature header does not match this payload") from None
    except ValueError:
        raise InvalidInput("The payload is not a Stripe event") from None


def stripe_payments_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)
