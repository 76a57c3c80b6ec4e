"""Buying credits from the dashboard: apps.billing's checkout service, with Stripe's API
replaced at the HTTP boundary by the billing tests' loopback stand-in."""

import pytest
from django.test import Client

from tests.billing.conftest import fake_stripe  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


def test_buy_redirects_to_the_stripe_checkout_page(fake_stripe, make_user):  # noqa: F811
    user = make_user("olga")
    client = Client()
    client.force_login(user)
    page = client.get("/dashboard/billing/")
    assert b"disabled>Buy" not in page.content
    response = client.post("/dashboard/billing/checkout/", {"pack": "starter"})
    assert response.status_code == 302
    assert response["Location"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    sent = fake_stripe.requests[-1].form
    assert sent["success_url"] == sent["cancel_url"] == "http://testserver/dashboard/billing/"


def test_an_unknown_pack_is_refused_with_a_message(fake_stripe, make_user):  # noqa: F811
    user = make_user("olga")
    client = Client()
    client.force_login(user)
    response = client.post("/dashboard/billing/checkout/", {"pack": "nope"}, follow=True)
    assert b"unknown credit pack" in response.content
    assert not fake_stripe.requests
