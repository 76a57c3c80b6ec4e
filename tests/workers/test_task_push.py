"""The submission's task push (apps.common.queues.task_push) writes the message Celery's own
`send_task` writes, field for field but the delivery tag; the worker tests (test_job_flow, ...)
run jobs from pushed messages end to end."""

import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from apps.common.queues import task_publish, task_push
from apps.common.request_context import log_context_bind, log_context_reset
from phonos.celery import REQUEST_ID_TASK_HEADER


@pytest.fixture
def broker() -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = f"push-test-{uuid.uuid4().hex}"
    yield client, queue
    client.delete(queue)


def test_a_pushed_task_is_the_message_send_task_publishes(broker):
    client, queue = broker
    task_id = str(uuid.uuid4())
    options = {
        "args": [task_id],
        "queue": queue,
        "what": "test",
        "task_id": task_id,
        "soft_time_limit": 1800,
        "time_limit": 1830,
    }
    token = log_context_bind(request_id="req-push-1")
    try:
        assert task_publish("workers.tasks.run_job", **options)
        assert task_push("workers.tasks.run_job", **options)
    finally:
        log_context_reset(token)
    pushed, published = (json.loads(raw) for raw in client.lrange(queue, 0, -1))
    for message in (pushed, published):
        assert message["properties"].pop("delivery_tag")
    assert pushed == published
    assert pushed["headers"]["id"] == task_id
    assert pushed["headers"]["timelimit"] == [1830, 1800]
    assert pushed["headers"][REQUEST_ID_TASK_HEADER] == "req-push-1"


def test_a_push_to_a_broker_that_is_down_answers_false(settings):
    from apps.common import queues

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    queues._broker_redis.cache_clear()
    try:
        task_id = str(uuid.uuid4())
        assert not task_push(
            "workers.tasks.run_job",
            args=[task_id],
            queue="esmfold",
            what="test",
            task_id=task_id,
            soft_time_limit=10,
            time_limit=20,
        )
    finally:
        queues._broker_redis.cache_clear()
