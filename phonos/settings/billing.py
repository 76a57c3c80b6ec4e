"""Stripe credit top-ups (docs/billing.md)."""

# --- Stripe credit top-ups (docs/billing.md) ---------------------------------------------------
from apps.billing.packs import DEFAULT_CREDIT_PACKS, credit_packs_parse, currency_parse  # noqa: E402
from phonos.env import (
    ImproperlyConfiguredEnv,
    env_str,
)
from phonos.settings.webhooks import *  # noqa: F403

try:
    PHONOS_CREDIT_PACKS = credit_packs_parse(env_str("PHONOS_CREDIT_PACKS", DEFAULT_CREDIT_PACKS))
    PHONOS_CURRENCY = currency_parse(env_str("PHONOS_CURRENCY", "usd"))
except ValueError as error:
    raise ImproperlyConfiguredEnv(f"PHONOS_CREDIT_PACKS / PHONOS_CURRENCY: {error}") from None
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
# Only tests and stripe-mock change this; the SDK's default is https://api.stripe.com.
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com")
# Where Stripe sends the buyer back; Stripe fills in {CHECKOUT_SESSION_ID}.
PHONOS_CHECKOUT_SUCCESS_URL = env_str(
    "PHONOS_CHECKOUT_SUCCESS_URL",
    "http://localhost:8000/dashboard/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}",
)
PHONOS_CHECKOUT_CANCEL_URL = env_str(
    "PHONOS_CHECKOUT_CANCEL_URL", "http://localhost:8000/dashboard/billing?checkout=cancelled"
)
if IS_PRODUCTION and STRIPE_SECRET_KEY:
    _missing_stripe = [
        name
        for name in (
            "STRIPE_WEBHOOK_SECRET",
            "PHONOS_CHECKOUT_SUCCESS_URL",
            "PHONOS_CHECKOUT_CANCEL_URL",
        )
        if not env_str(name)
    ]
    if _missing_stripe:
        raise ImproperlyConfiguredEnv(
            "STRIPE_SECRET_KEY is set, so production also needs " + ", ".join(_missing_stripe)
        )
