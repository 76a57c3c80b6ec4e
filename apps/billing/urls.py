"""Included under /v1/ by phonos/urls.py; the Stripe webhook is mounted at /stripe/webhook."""

from django.urls import path

from apps.billing.apis import CheckoutApi, CheckoutDetailApi, CreditPackListApi, LedgerApi

urlpatterns = [
    path("billing/packs", CreditPackListApi.as_view(), name="billing-packs"),
    path("billing/checkout", CheckoutApi.as_view(), name="billing-checkout"),
    path(
        "billing/checkout/<str:session_id>",
        CheckoutDetailApi.as_view(),
        name="billing-checkout-detail",
    ),
    path("billing/ledger", LedgerApi.as_view(), name="billing-ledger"),
]
