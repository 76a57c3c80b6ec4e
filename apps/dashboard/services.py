"""Writes behind the dashboard: sign-up (throttled per client IP) and the verification mail."""

import logging

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string

from apps.accounts.models import Account, User
from apps.accounts.services import account_create, email_verification_token
from apps.common.exceptions import InvalidInput, TooManyRequests

logger = logging.getLogger(__name__)


def signup_throttle_hit(*, client_ip: str) -> None:
    """Count one sign-up from this address; refuse beyond PHONOS_SIGNUP_MAX_PER_IP per window.

    The counter is incremented before the check (one atomic Redis INCR), so parallel scripted
    sign-ups cannot all pass a check made before any of them counted.
    """
    key = f"phonos:signup:{client_ip}"
    window = settings.PHONOS_SIGNUP_WINDOW_SECONDS
    if cache.add(key, 1, timeout=window):
        count = 1
    else:
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=window)
            count = 1
    if count > settings.PHONOS_SIGNUP_MAX_PER_IP:
        raise TooManyRequests(
            "Too many sign-ups from your network; try again later",
            reason="signup_limit",
            retry_after=window,
        )


@transaction.atomic
def user_signup(*, username: str, email: str, password: str, verify_url: str) -> User:
    """A new tenant with its first user. No credits yet: the trial credits come with the
    verification link mailed to `email` (`verify_url` holds `{token}`)."""
    if User.objects.filter(username__iexact=username).exists():
        raise InvalidInput(f"The username {username!r} is taken")
    if Account.objects.filter(email__iexact=email, email_verified_at__isnull=False).exists():
        raise InvalidInput("An account with this email address already exists")
    try:
        validate_password(password, User(username=username, email=email))
    except ValidationError as error:
        raise InvalidInput(" ".join(error.messages)) from None
    account: Account = account_create(username=username, email=email)
    user = User.objects.create_user(
        username=username, email=email, password=password, account=account
    )
    transaction.on_commit(
        lambda: email_verification_send(account=account, verify_url=verify_url), robust=True
    )
    return user


def email_verification_send(*, account: Account, verify_url: str) -> None:
    link = verify_url.format(token=email_verification_token(account=account))
    context = {
        "account": account,
        "link": link,
        "credits": settings.PHONOS_SIGNUP_CREDITS,
        "valid_hours": settings.PHONOS_EMAIL_VERIFICATION_MAX_AGE_SECONDS // 3600,
    }
    send_mail(
        subject="Verify your email address for Phonos",
        message=render_to_string("dashboard/verify_email.txt", context),
        from_email=None,
        recipient_list=[account.email],
    )
    logger.info("Verification mail sent to account %s", account.id)
