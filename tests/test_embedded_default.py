"""The embedded default (no DATABASE_URL, no REDIS_URL): its SQLite Celery broker takes the
settings' transport options (a Redis-only option once crashed every worker of `scripts/run`)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_embedded_broker_accepts_the_transport_options(tmp_path: Path) -> None:
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "REDIS_URL", "PHONOS_ENV", "DJANGO_SETTINGS_MODULE"}
    }
    environment.update(PHONOS_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="phonos.settings")
    code = (
        "import django; django.setup()\n"
        "from phonos.celery import app\n"
        "assert app.conf.broker_url.startswith('sqla+sqlite')\n"
        "with app.connection_for_write() as connection:\n"
        "    connection.default_channel.queue_declare(queue='light')\n"
        "print('declared')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "declared" in done.stdout
