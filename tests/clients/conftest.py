"""The client runs in its own virtualenv holding only `pip install ./clients/python`: it is
tested as a user installs it, with nothing of the server importable."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.webhooks.conftest import hook_worker, loopback_allowed, receiver  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ClientEnv:
    bin: Path
    workdir: Path

    def env(self, key: str, base_url: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("PHONOS_", "DJANGO"))}
        return {**clean, "PHONOS_API_KEY": key, "PHONOS_BASE_URL": base_url, "NO_COLOR": "1"}

    def python(self, code: str, key: str, base_url: str, timeout: float = 120) -> dict:
        """Run `code` in the client's interpreter; it prints one JSON object as its last line."""
        done = subprocess.run(
            [str(self.bin / "python"), "-c", textwrap.dedent(code)],
            cwd=self.workdir,
            env=self.env(key, base_url),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def cli(
        self, *args: str, key: str, base_url: str, timeout: float = 180
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / "phonos"), *args],
            cwd=self.workdir,
            env=self.env(key, base_url),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def client_env(tmp_path_factory) -> ClientEnv:
    root = tmp_path_factory.mktemp("phonos-client")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(REPO / "clients/python")],
        check=True,
        capture_output=True,
    )
    workdir = root / "work"
    workdir.mkdir()
    # Nothing of the server may come along.
    for module in ("django", "torch", "celery"):
        probe = subprocess.run(
            [str(venv / "bin" / "python"), "-c", f"import {module}"],
            cwd=workdir,
            capture_output=True,
        )
        assert probe.returncode != 0, f"{module} is importable next to the client"
    return ClientEnv(bin=venv / "bin", workdir=workdir)
