"""Optional test dependencies (torch, ColabFold, Chromium) that must not turn into quiet passes.

A missing dependency fails the run. A developer without one may opt out explicitly with
`PHONOS_TEST_ALLOW_SKIPS=1`; the tests that need it are then skipped and counted in the summary
(`tests/conftest.py`). CI (`CI=true`) ignores the opt-out: there, a missing dependency fails.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

ALLOW_SKIPS_ENV = "PHONOS_TEST_ALLOW_SKIPS"
# Every skip this module makes starts with it, so the summary can count them apart.
SKIP_PREFIX = "missing test dependency"


def skips_allowed() -> bool:
    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    return not in_ci and os.environ.get(ALLOW_SKIPS_ENV) == "1"


def _missing(what: str, hint: str) -> None:
    message = f"{SKIP_PREFIX}: {what} ({hint})"
    if skips_allowed():
        pytest.skip(message, allow_module_level=True)
    pytest.fail(f"{message}; set {ALLOW_SKIPS_ENV}=1 to skip locally", pytrace=False)


def require_module(name: str, *, hint: str) -> ModuleType:
    """Import `name`, or fail (skip only when the developer opted out)."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        _missing(f"cannot import {name}: {error}", hint)
        raise  # unreachable: _missing always raises


def require_path(path: Path, *, hint: str) -> Path:
    if not path.exists():
        _missing(f"no {path}", hint)
    return path
