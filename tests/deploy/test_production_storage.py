"""Production refuses job outputs on a local disk that nobody named (issue 10): an API node and a
worker on different machines would each write to their own `var/storage`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FERNET_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def manage_check(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    """`manage.py check` in a fresh process under production settings (no database needed)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PHONOS_", "AWS_")) and key != "DJANGO_SETTINGS_MODULE"
    }
    env.update(
        DJANGO_SETTINGS_MODULE="phonos.settings",
        PHONOS_ENV="production",
        PHONOS_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL="postgres://phonos:secret@127.0.0.1:5432/phonos",
        REDIS_URL="redis://127.0.0.1:6379/0",
        SECRET_KEY="a-production-secret-key-for-this-test-only",
        PHONOS_WEBHOOK_SECRET_KEY=FERNET_KEY,
        ALLOWED_HOSTS="phonos.example.com",
    )
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_without_bucket_or_named_directory_is_refused(tmp_path: Path) -> None:
    result = manage_check(tmp_path)
    assert result.returncode != 0
    assert "PHONOS_S3_BUCKET" in result.stderr
    assert "PHONOS_STORAGE_DIR" in result.stderr


@pytest.mark.parametrize("setting", ["PHONOS_S3_BUCKET", "PHONOS_STORAGE_DIR"])
def test_production_starts_with_a_bucket_or_a_named_shared_directory(
    tmp_path: Path, setting: str
) -> None:
    value = "phonos-outputs" if setting == "PHONOS_S3_BUCKET" else str(tmp_path / "shared")
    result = manage_check(tmp_path, **{setting: value})
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_development_keeps_the_embedded_local_store(tmp_path: Path) -> None:
    result = manage_check(tmp_path, PHONOS_ENV="development")
    assert result.returncode == 0, result.stderr
