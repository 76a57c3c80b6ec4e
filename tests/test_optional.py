"""A missing test dependency fails the run; only an explicit local opt-out skips, never in CI."""

import pytest

from tests.optional import ALLOW_SKIPS_ENV, require_module

MISSING = "phonos_no_such_module"


def test_missing_dependency_fails_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_SKIPS_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.fail.Exception, match=ALLOW_SKIPS_ENV):
        require_module(MISSING, hint="test")


def test_developer_opt_out_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_SKIPS_ENV, "1")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="missing test dependency"):
        require_module(MISSING, hint="test")


def test_ci_ignores_the_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_SKIPS_ENV, "1")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_module(MISSING, hint="test")


def test_present_dependency_is_returned() -> None:
    assert require_module("json", hint="stdlib").dumps([]) == "[]"
