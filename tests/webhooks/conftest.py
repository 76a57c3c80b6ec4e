import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from django.conf import settings

from bench.processes import wait_until
from phonos.celery import app as celery_app
from tests.conftest import ESMFOLD_JOB, Client, WorkerProcess

# Retry delays for tests, in seconds: the production schedule's shape, a thousand times shorter.
FAST_RETRY_SCHEDULE = "0.3,0.3,0.3,0.3,0.3,0.3,0.3"


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server on loopback that records every request it gets and answers with the
    statuses it was told to (200 once they run out)."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self._statuses: deque[int] = deque()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(
                        ReceivedRequest(path=self.path, headers=dict(self.headers), body=body)
                    )
                    status = receiver._statuses.popleft() if receiver._statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.url_for("/elsewhere"))
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"received" if status < 300 else b"not today")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    @property
    def url(self) -> str:
        return self.url_for("/hooks/phonos")

    def respond_with(self, *statuses: int) -> None:
        with self._lock:
            self._statuses.extend(statuses)

    def wait_for(self, count: int, timeout: float = 20) -> list[ReceivedRequest]:
        wait_until(lambda: len(self.requests) >= count, timeout=timeout)
        return list(self.requests)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def queue_drained(queue: str = "light") -> None:
    """Wait until every task published to `queue` so far has run: the queue is empty and no
    worker holds a task (active, reserved or scheduled for a retry), twice in a row. Then
    whatever was going to be sent has been sent, and "nothing more arrived" proves something."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    inspect = celery_app.control.inspect(timeout=1)

    def idle() -> bool:
        if broker.llen(queue):
            return False
        replies = (inspect.active(), inspect.reserved(), inspect.scheduled())
        # No reply at all means no worker answered yet, not an idle one.
        return all(reply and not any(reply.values()) for reply in replies)

    wait_until(lambda: idle() and idle())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def loopback_allowed(settings) -> None:
    """The test process (API and services) may register plain-http loopback receivers, and
    gives the deliveries it writes as many attempts as the fast schedule has."""
    settings.PHONOS_WEBHOOK_ALLOW_HTTP = True
    settings.PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    settings.PHONOS_WEBHOOK_RETRY_SCHEDULE = [float(s) for s in FAST_RETRY_SCHEDULE.split(",")]


@pytest.fixture
def hook_worker(start_worker) -> Callable[..., WorkerProcess]:
    """Start a real Celery worker on `light`, allowed to deliver to loopback over plain http,
    with fast retries; keyword arguments override its environment."""

    def start(**env: str) -> WorkerProcess:
        return start_worker(
            queues="light",
            **{
                "PHONOS_WEBHOOK_ALLOW_HTTP": "true",
                "PHONOS_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
                "PHONOS_WEBHOOK_RETRY_SCHEDULE": FAST_RETRY_SCHEDULE,
                **env,
            },
        )

    return start


def webhook_create(client: Client, url: str, **body: Any) -> dict:
    response = client.post("/v1/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    return response.json()


def job_submit(client: Client) -> str:
    """A job of its own each time: identical submissions would otherwise share one run."""
    response = client.post("/v1/predict", json={**ESMFOLD_JOB, "params": {"cache": False}})
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


def deliveries(client: Client, webhook_id: str) -> list[dict]:
    response = client.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


def finished_deliveries(client: Client, webhook_id: str, count: int = 1) -> list[dict]:
    """Wait until `count` deliveries have stopped changing (succeeded or failed for good)."""
    return wait_until(
        lambda: (
            found
            if len(found := deliveries(client, webhook_id)) >= count
            and all(delivery["status"] != "pending" for delivery in found)
            else None
        )
    )
