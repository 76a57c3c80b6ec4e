"""Sign-up, login and key creation attacked the way a script would, through real HTTP against the
live server (requests sessions, CSRF tokens and all), with the real mail outbox, PostgreSQL and
django-axes. Client addresses are told apart by X-Forwarded-For behind one trusted proxy, the way
a load balancer would report them."""

import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import IntegrityError
from django.utils import timezone

from apps.accounts.models import Account, ApiKey, User
from apps.billing.models import LedgerEntry

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple 42"


class Browser:
    """A scripted client: a requests session that fetches each form's CSRF token first. `ip` is
    the address the trusted proxy reports in X-Forwarded-For; `forged` is what the client itself
    put there before the proxy appended the real address."""

    def __init__(self, base_url: str, ip: str | None = None, forged: str | None = None) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if ip is not None:
            self.session.headers["X-Forwarded-For"] = ", ".join(filter(None, [forged, ip]))

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.base_url + path, allow_redirects=False, timeout=30)

    def post(self, path: str, data: dict) -> requests.Response:
        self.get(path)
        token = self.session.cookies.get("csrftoken") or self._token_from(path)
        return self.session.post(
            self.base_url + path,
            data={**data, "csrfmiddlewaretoken": token},
            headers={"Referer": self.base_url + path},
            allow_redirects=False,
            timeout=30,
        )

    def _token_from(self, path: str) -> str:
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', self.get(path).text)[1]

    def sign_up(self, username: str, email: str | None = None, password: str = PASSWORD):
        return self.post(
            "/dashboard/signup/",
            {
                "username": username,
                "email": email or f"{username}@example.org",
                "password1": password,
                "password2": password,
            },
        )

    def log_in(self, username: str, password: str, path: str = "/dashboard/login/"):
        return self.post(path, {"username": username, "password": password})


@pytest.fixture
def browser(live_server) -> Callable[..., Browser]:
    return lambda ip=None, forged=None: Browser(live_server.url, ip=ip, forged=forged)


@pytest.fixture
def behind_proxy(settings):
    settings.PHONOS_TRUSTED_PROXY_COUNT = 1


def verification_path(email: str) -> str:
    bodies = [message.body for message in mail.outbox if email in message.to]
    assert bodies, f"no verification mail to {email}"
    return re.search(r"https?://[^/\s]+(/dashboard/verify-email/\S+/)", bodies[-1])[1]


def balance(username: str) -> int:
    return Account.objects.get(username=username).credit_balance


def trial_grants(username: str) -> int:
    return LedgerEntry.objects.filter(
        account__username=username, kind=LedgerEntry.Kind.GRANT
    ).count()


# --- Sign-up -------------------------------------------------------------------------------------


def test_scripted_signups_get_no_credits_before_verification(browser, behind_proxy, settings):
    settings.PHONOS_SIGNUP_CREDITS = 100
    client = browser("198.51.100.1")
    for number in range(3):
        assert client.sign_up(f"farm{number}").status_code == 302
    assert [balance(f"farm{number}") for number in range(3)] == [0, 0, 0]
    assert LedgerEntry.objects.count() == 0
    assert len(mail.outbox) == 3


def test_the_link_grants_the_trial_exactly_once_even_clicked_twice_or_at_once(browser, settings):
    settings.PHONOS_SIGNUP_CREDITS = 100
    client = browser()
    assert client.sign_up("twice").status_code == 302
    link = verification_path("twice@example.org")
    first, second = client.get(link), browser().get(link)
    assert first.status_code == second.status_code == 302
    assert balance("twice") == 100 and trial_grants("twice") == 1

    assert client.sign_up("racer").status_code == 302
    link = verification_path("racer@example.org")
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: browser().get(link).status_code, range(8)))
    assert answers == [302] * 8
    assert balance("racer") == 100 and trial_grants("racer") == 1


def test_a_forged_or_expired_link_verifies_nothing(browser, settings):
    client = browser()
    assert client.sign_up("patient").status_code == 302
    link = verification_path("patient@example.org")
    token = link.rstrip("/").rsplit("/", 1)[1]
    forged = client.get(f"/dashboard/verify-email/{token[:-2]}xx/")
    assert forged.status_code == 400 and "not valid" in forged.text
    settings.PHONOS_EMAIL_VERIFICATION_MAX_AGE_SECONDS = -1
    expired = client.get(link)
    assert expired.status_code == 400 and "expired" in expired.text
    assert Account.objects.get(username="patient").email_verified_at is None
    assert balance("patient") == 0


def test_a_verified_email_belongs_to_one_account(browser, behind_proxy):
    owner = browser("198.51.100.2")
    assert owner.sign_up("owner", email="lab@example.org").status_code == 302
    # A squatter signed up with the same address first, or signs up later: it can never verify.
    squatter = browser("198.51.100.3")
    assert squatter.sign_up("squatter", email="LAB@example.org").status_code == 302
    squatter_link = verification_path("LAB@example.org")
    assert owner.get(verification_path("lab@example.org")).status_code == 302
    refused = squatter.get(squatter_link)
    assert refused.status_code == 400 and "already verified" in refused.text
    assert balance("squatter") == 0

    duplicate = browser("198.51.100.4").sign_up("third", email="Lab@Example.org")
    assert duplicate.status_code == 400 and "already exists" in duplicate.text
    assert not User.objects.filter(username="third").exists()
    with pytest.raises(IntegrityError):
        Account.objects.filter(username="squatter").update(email_verified_at=timezone.now())


@pytest.mark.parametrize("password", ["a", "password123", "12345678901", "weakling1"])
def test_weak_passwords_are_refused(browser, password):
    response = browser().sign_up("weakling1", password=password)
    assert response.status_code == 400
    assert not User.objects.filter(username="weakling1").exists()


def test_signups_are_throttled_per_client_ip(browser, behind_proxy, settings):
    settings.PHONOS_SIGNUP_MAX_PER_IP = 3
    farm = browser("198.51.100.10")
    assert [farm.sign_up(f"bulk{number}").status_code for number in range(4)] == [
        302,
        302,
        302,
        429,
    ]
    assert not Account.objects.filter(username="bulk3").exists()
    # A forged X-Forwarded-For entry does not make the farm a new client...
    forged = browser("198.51.100.10", forged="203.0.113.77")
    assert forged.sign_up("bulk4").status_code == 429
    # ...while another client behind the same proxy is counted on its own.
    assert browser("198.51.100.11").sign_up("neighbour").status_code == 302


def test_without_trusted_proxies_x_forwarded_for_is_ignored(browser, settings):
    settings.PHONOS_SIGNUP_MAX_PER_IP = 2
    answers = [
        browser(f"203.0.113.{number}").sign_up(f"spoof{number}").status_code for number in range(3)
    ]
    assert answers == [302, 302, 429]


# --- Login -------------------------------------------------------------------------------------


@pytest.fixture
def olga(browser, settings):
    assert browser().sign_up("olga").status_code == 302
    return User.objects.get(username="olga")


@pytest.fixture
def limits(settings):
    settings.PHONOS_LOGIN_MAX_FAILURES = settings.AXES_FAILURE_LIMIT = 3
    settings.PHONOS_LOGIN_MAX_FAILURES_PER_IP = 6


def test_login_locks_out_per_username_across_addresses(browser, behind_proxy, limits, olga):
    for number in range(2):
        failed = browser(f"192.0.2.{number}").log_in("olga", "wrong")
        assert failed.status_code == 200 and "correct username and password" in failed.text
    assert browser("192.0.2.2").log_in("olga", "wrong").status_code == 429
    # Locked for the username: the right password from a fresh address is refused too.
    locked = browser("192.0.2.3").log_in("olga", PASSWORD)
    assert locked.status_code == 429 and "Too many failed log-in attempts" in locked.text


def test_other_clients_behind_the_proxy_are_not_locked_out(browser, behind_proxy, limits, olga):
    User.objects.create_user(username="pia", password=PASSWORD)
    attacker = browser("192.0.2.50")
    for username in ("olga", "olga"):
        attacker.log_in(username, "wrong")
    # Another client behind the same proxy logs in to another account; olga herself is still
    # under her username's limit.
    assert browser("192.0.2.51").log_in("pia", PASSWORD).status_code == 302
    assert browser("192.0.2.52").log_in("olga", PASSWORD).status_code == 302


def test_password_spraying_is_throttled_per_ip(browser, behind_proxy, limits, olga):
    sprayer = browser("192.0.2.66")
    answers = [sprayer.log_in(f"user{number}", "Summer2024!").status_code for number in range(6)]
    assert answers == [200] * 5 + [429]
    # The address is locked, whatever username it tries next, even with a right password...
    assert sprayer.log_in("olga", PASSWORD).status_code == 429
    # ...and a forged X-Forwarded-For entry in front of the proxy's does not escape it.
    forged = browser("192.0.2.66", forged="10.9.8.7")
    assert forged.log_in("user99", "Summer2024!").status_code == 429
    # Olga logging in from her own address is unaffected.
    assert browser("192.0.2.67").log_in("olga", PASSWORD).status_code == 302


def test_logging_in_to_ones_own_account_does_not_reset_the_address_count(
    browser, behind_proxy, limits, olga
):
    User.objects.create_user(username="sprayer", password=PASSWORD)
    client = browser("192.0.2.80")
    for number in range(4):
        assert client.log_in(f"victim{number}", "guess").status_code == 200
    assert client.log_in("sprayer", PASSWORD).status_code == 302
    client.session.cookies.clear()
    assert client.log_in("victim4", "guess").status_code == 200
    assert client.log_in("victim5", "guess").status_code == 429


def test_admin_login_is_locked_out_the_same_way(browser, behind_proxy, limits):
    User.objects.create_superuser(username="root", email="root@example.org", password=PASSWORD)
    admin = browser("192.0.2.90")
    for _ in range(2):
        assert admin.log_in("root", "wrong", path="/admin/login/").status_code == 200
    assert admin.log_in("root", "wrong", path="/admin/login/").status_code == 429
    assert browser("192.0.2.91").log_in("root", PASSWORD, path="/admin/login/").status_code == 429
    # The dashboard shares the same count: one mechanism.
    assert browser("192.0.2.92").log_in("root", PASSWORD).status_code == 429


# --- Keys --------------------------------------------------------------------------------------


@pytest.fixture
def signed_in(browser, olga) -> Browser:
    client = browser()
    assert client.log_in("olga", PASSWORD).status_code == 302
    return client


def create_key(client: Browser, **fields) -> requests.Response:
    return client.post("/dashboard/keys/", {"name": "k", "password": PASSWORD, **fields})


def test_a_dashboard_key_never_exceeds_the_account_maximum(signed_in, olga, settings):
    settings.PHONOS_MAX_KEY_RATE_LIMIT = 600
    too_fast = create_key(signed_in, rate_limit_per_minute=601)
    assert too_fast.status_code == 400 and "600" in too_fast.text
    assert create_key(signed_in, rate_limit_per_minute=600).status_code == 201
    # An operator raises this account's maximum in the admin; the new maximum holds the same way.
    Account.objects.filter(id=olga.account_id).update(max_key_rate_limit=5000)
    assert create_key(signed_in, rate_limit_per_minute=5000).status_code == 201
    assert create_key(signed_in, rate_limit_per_minute=5001).status_code == 400
    rates = sorted(
        ApiKey.objects.filter(account=olga.account).values_list("rate_limit_per_minute", flat=True)
    )
    assert rates == [600, 5000]


def test_active_keys_per_account_are_capped(signed_in, olga, settings):
    settings.PHONOS_MAX_ACTIVE_KEYS_PER_ACCOUNT = 2
    assert [create_key(signed_in).status_code for _ in range(3)] == [201, 201, 400]
    assert ApiKey.objects.filter(account=olga.account).count() == 2


def test_creating_a_key_asks_for_the_password_again(signed_in, olga, settings):
    settings.PHONOS_LOGIN_MAX_FAILURES = settings.AXES_FAILURE_LIMIT = 3
    missing = signed_in.post("/dashboard/keys/", {"name": "no password"})
    assert missing.status_code == 400
    wrong = create_key(signed_in, password="not my password")
    assert wrong.status_code == 400 and "not your password" in wrong.text
    assert not ApiKey.objects.filter(account=olga.account).exists()
    # Guessing the password through this form counts towards the login lockout.
    assert create_key(signed_in, password="guess").status_code == 400
    assert create_key(signed_in, password="guess again").status_code == 429
    assert not ApiKey.objects.filter(account=olga.account).exists()


def test_the_cli_never_creates_a_key_above_the_account_maximum(olga, settings):
    settings.PHONOS_MAX_KEY_RATE_LIMIT = 600
    with pytest.raises(CommandError, match="at most 600"):
        call_command(
            "phonos_key", "create", "--account", str(olga.account_id), "--rate-limit", "601"
        )
    assert not ApiKey.objects.exists()


# --- Operator grants -----------------------------------------------------------------------------


def test_grant_by_email_needs_a_verified_address(browser, behind_proxy, settings):
    assert browser("198.51.100.20").sign_up("early", email="lab@example.org").status_code == 302
    with pytest.raises(CommandError, match="No account has verified"):
        call_command("phonos_account", "grant", "--email", "lab@example.org", "--credits", "50")
    assert browser("198.51.100.21").sign_up("real", email="lab@example.org").status_code == 302
    real = Account.objects.get(username="real")
    assert browser().get(verification_path("lab@example.org")).status_code == 302  # real's mail
    call_command("phonos_account", "grant", "--email", "LAB@example.org", "--credits", "50")
    call_command("phonos_account", "grant", "--account", str(real.id), "--credits", "5")
    assert balance("early") == 0
    assert balance("real") == settings.PHONOS_SIGNUP_CREDITS + 55


# --- Production posture --------------------------------------------------------------------------


def _production_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "DATABASE_URL", "REDIS_URL")
    return {name: os.environ[name] for name in keep if name in os.environ} | extra


def test_deploy_checks_pass_in_production():
    result = subprocess.run(
        [str(ROOT / "scripts" / "check-deploy")],
        env=_production_env(PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_debug_is_refused_in_production():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_production_env(
            PHONOS_ENV="production",
            DJANGO_SETTINGS_MODULE="phonos.settings",
            DEBUG="true",
            SECRET_KEY="x" * 60,
            PHONOS_WEBHOOK_SECRET_KEY="A" * 43 + "=",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "DEBUG=true is refused" in result.stderr
