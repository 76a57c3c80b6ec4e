"""Writes behind the dashboard: sign-up, and the failed-login counter that throttles logins."""

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from apps.accounts.models import Account, User
from apps.billing.services import account_open
from apps.common.exceptions import InvalidInput


@transaction.atomic
def user_signup(*, username: str, email: str, password: str) -> User:
    """A new tenant with its first user, credited with the free trial credits."""
    if User.objects.filter(username__iexact=username).exists():
        raise InvalidInput(f"The username {username!r} is taken")
    account: Account = account_open(
        username=username, email=email, credits=settings.PHONOS_SIGNUP_CREDITS
    )
    return User.objects.create_user(
        username=username, email=email, password=password, account=account
    )


def _login_failure_key(*, client_ip: str, username: str) -> str:
    return f"dashboard:login-failures:{client_ip}:{username.strip().lower()}"


def login_failure_record(*, client_ip: str, username: str) -> int:
    """Count one failed login; the window starts at the first failure and is not extended."""
    key = _login_failure_key(client_ip=client_ip, username=username)
    if cache.add(key, 1, timeout=settings.PHONOS_LOGIN_FAILURE_WINDOW_SECONDS):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=settings.PHONOS_LOGIN_FAILURE_WINDOW_SECONDS)
        return 1


def login_failures_clear(*, client_ip: str, username: str) -> None:
    cache.delete(_login_failure_key(client_ip=client_ip, username=username))


def login_is_throttled(*, client_ip: str, username: str) -> bool:
    failures = cache.get(_login_failure_key(client_ip=client_ip, username=username)) or 0
    return failures >= settings.PHONOS_LOGIN_MAX_FAILURES
