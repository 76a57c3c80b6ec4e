"""A real headless Chromium (Debian's, driven by Playwright) against the live server."""

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core import mail
from django.test import Client

from apps.accounts.models import User
from apps.dashboard.services import user_signup
from tests.optional import require_module, require_path

CHROMIUM = os.environ.get("PHONOS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # WebGL for Mol* without a GPU: the software rasteriser.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery staple 42"


@pytest.fixture(scope="session")
def browser() -> Iterator:
    playwright_api = require_module("playwright.sync_api", hint="pip install -e '.[test]'")
    require_path(Path(CHROMIUM), hint="scripts/test installs Debian's chromium")
    # Playwright's sync API runs its own event loop; Django must still allow DB access here.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser, live_server) -> Iterator[Callable]:
    contexts = []

    def make():
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        context.set_default_timeout(30_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_up(page, username: str) -> None:
    page.goto("/dashboard/signup/")
    page.fill("input[name=username]", username)
    page.fill("input[name=email]", f"{username}@example.com")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/")
    page.goto(verification_path(f"{username}@example.com"))
    page.wait_for_url("**/dashboard/")


def verification_path(email: str) -> str:
    """The path of the latest verification link mailed to `email` (Django's test mail outbox)."""
    bodies = [message.body for message in mail.outbox if email in message.to]
    assert bodies, f"no verification mail to {email}"
    return re.search(r"https?://[^/\s]+(/dashboard/verify-email/\S+/)", bodies[-1])[1]


@pytest.fixture
def make_user(django_capture_on_commit_callbacks, mailoutbox) -> Callable[..., User]:
    """A signed-up user whose email was verified through the mailed link (trial credits in)."""

    def make(username: str, password: str = PASSWORD) -> User:
        email = f"{username}@example.com"
        with django_capture_on_commit_callbacks(execute=True):
            user = user_signup(
                username=username,
                email=email,
                password=password,
                verify_url="http://testserver/dashboard/verify-email/{token}/",
            )
        assert Client().get(verification_path(email)).status_code == 302
        user.account.refresh_from_db()
        return user

    return make
