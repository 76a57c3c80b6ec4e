"""GET /v1/jobs/{id} answers from a snapshot in Redis (apps.jobs.snapshots) until the job is
written: over HTTP, every kind of write makes the next GET show the row as PostgreSQL holds it,
a snapshot never crosses tenants or outlives a revoked key, and a GET that read the row before
a write cannot store what it read."""

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import transaction

from apps.accounts.services import api_key_revoke
from apps.jobs.apis import job_body
from apps.jobs.models import Job
from apps.jobs.selectors import job_values_get
from apps.jobs.services import (
    job_complete,
    job_fail,
    job_heartbeat,
    job_progress,
    job_start,
    job_sweep,
)
from apps.jobs.snapshots import Snapshot, snapshot_key, snapshot_store, snapshots_forget
from apps.ops.account_deletion import account_delete
from tests.conftest import ESMFOLD_JOB, Client

pytestmark = pytest.mark.django_db(transaction=True)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _hash(job_id: str) -> dict[bytes, bytes]:
    return _redis().hgetall(snapshot_key(uuid.UUID(job_id)))  # type: ignore[return-value]


def _peeked(job_uuid: uuid.UUID) -> Snapshot:
    """The hash as the rate limit's round trip reads it (HGETALL's flat reply)."""
    fields = _redis().hgetall(snapshot_key(job_uuid))
    return Snapshot([part for pair in fields.items() for part in pair])  # type: ignore[union-attr]


def _submit(client: Client, **changes: Any) -> str:
    response = client.post("/v1/predict", json={**ESMFOLD_JOB, **changes})
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


def _database_body(client: Client, job_id: str) -> dict[str, Any]:
    # Through JSON, as the client reads it.
    encoded = json.dumps(job_body(job_values_get(account_id=client.account.id, job_id=job_id)))
    return dict(json.loads(encoded))


def _polled(client: Client, job_id: str) -> dict[str, Any]:
    """GET twice: the first answer may come from the row, the second from the snapshot the
    first one stored; both must be what the database holds now."""
    first = client.get(f"/v1/jobs/{job_id}")
    second = client.get(f"/v1/jobs/{job_id}")
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.content == second.content
    assert _hash(job_id)[b"body"] == second.content
    assert second.json() == _database_body(client, job_id)
    return dict(second.json())


def test_the_second_get_comes_from_the_snapshot_with_the_same_bytes_and_headers(alice):
    job_id = _submit(alice)
    first = alice.get(f"/v1/jobs/{job_id}")
    stored = _hash(job_id)
    assert stored[b"body"] == first.content
    assert int(stored[b"account"]) == alice.account.id
    assert stored[b"at"] == stored.get(b"gen", b"0") == b"0"
    assert 0 < _redis().pttl(snapshot_key(uuid.UUID(job_id))) <= 30_000

    second = alice.get(f"/v1/jobs/{job_id}")
    assert second.content == first.content
    ignored = {"Date", "X-Request-ID", "RateLimit-Remaining"}
    assert {k: v for k, v in second.headers.items() if k not in ignored} == {
        k: v for k, v in first.headers.items() if k not in ignored
    }

    # Served from the hash, not the row: a body planted there is what comes back.
    planted = first.content.replace(b'"name":"demo"', b'"name":"planted"')
    _redis().hset(snapshot_key(uuid.UUID(job_id)), "body", planted)
    assert alice.get(f"/v1/jobs/{job_id}").json()["name"] == "planted"


def _cancel(client: Client, job_id: str) -> None:
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200


def _complete(client: Client, job_id: str) -> None:
    job_start(job_id=job_id)
    _polled(client, job_id)
    assert job_complete(job_id=job_id, output_file=f"{job_id}.pdb", summary={}, metadata={})


def _fail(client: Client, job_id: str) -> None:
    job_start(job_id=job_id)
    _polled(client, job_id)
    assert job_fail(job_id=job_id, error="the worker ran out of memory")


def _progress(client: Client, job_id: str) -> None:
    job_start(job_id=job_id)
    _polled(client, job_id)
    assert job_progress(job_id=job_id, stage="folding", progress=0.5)


def _instance_save(client: Client, job_id: str) -> None:
    job = Job.objects.get(id=job_id)
    job.name = "renamed by an operator"
    job.save(update_fields=["name"])


def _update_by_account(client: Client, job_id: str) -> None:
    # A filter that names no id: the ids are read before the write.
    Job.objects.filter(account_id=client.account.id).update(stage="checked")


def _update_in_a_transaction(client: Client, job_id: str) -> None:
    with transaction.atomic():
        Job.objects.filter(id=job_id).update(credits_refunded=7)
        # Not yet committed: the snapshot still answers as before.
        assert client.get(f"/v1/jobs/{job_id}").json()["credits_refunded"] == 0


def _update_of_a_relation_by_name(client: Client, job_id: str) -> None:
    other = Job.objects.get(id=_submit(client, name="the fold"))
    Job.objects.filter(id=job_id).update(depends_on=other)


def _sweep_a_dead_run(client: Client, job_id: str) -> None:
    job_start(job_id=job_id)
    _polled(client, job_id)
    # Its worker stopped for the last time it may: the sweeper gives it up.
    Job.objects.filter(id=job_id).update(
        heartbeat_at="2000-01-01T00:00:00Z", attempts=settings.PHONOS_JOB_MAX_ATTEMPTS
    )
    assert job_sweep().failed == [job_id]


WRITES: dict[str, Callable[[Client, str], None]] = {
    "cancel over the API": _cancel,
    "start": lambda client, job_id: job_start(job_id=job_id) and None,
    "progress": _progress,
    "complete": _complete,
    "fail": _fail,
    "an instance saved": _instance_save,
    "an update filtered by account": _update_by_account,
    "an update inside a transaction": _update_in_a_transaction,
    "an update of a relation by name": _update_of_a_relation_by_name,
    "the sweeper": _sweep_a_dead_run,
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_every_write_makes_the_next_get_show_the_row(alice, write):
    job_id = _submit(alice)
    before = _polled(alice, job_id)
    write(alice, job_id)
    after = _polled(alice, job_id)
    assert after != before


def test_a_deleted_job_answers_404_and_its_followers_lose_the_reference(alice):
    leader_id = _submit(alice)
    follower_id = _submit(alice)
    assert _polled(alice, follower_id)["cached_from"] == leader_id
    _polled(alice, leader_id)

    # What deleting the leader's row does (an account deletion, an operator): the followers'
    # references to it are set to null by the database's cascade.
    Job.objects.filter(id=leader_id).delete()
    assert alice.get(f"/v1/jobs/{leader_id}").status_code == 404
    assert _polled(alice, follower_id)["cached_from"] is None

    # And through the API, once it ended.
    _cancel(alice, follower_id)
    _polled(alice, follower_id)
    assert alice.delete(f"/v1/jobs/{follower_id}").status_code == 200
    assert alice.get(f"/v1/jobs/{follower_id}").status_code == 404


def test_another_tenant_gets_the_same_404_with_a_snapshot_in_place(alice, charlie):
    job_id = _submit(alice)
    _polled(alice, job_id)
    missing = charlie.get(f"/v1/jobs/{uuid.uuid4()}")
    theirs = charlie.get(f"/v1/jobs/{job_id}")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["message"] == f"Job {job_id} not found"
    assert b"demo" not in theirs.content


def test_a_revoked_key_is_refused_even_with_a_snapshot_in_place(alice):
    job_id = _submit(alice)
    _polled(alice, job_id)
    key_id = alice.account.api_keys.get().id
    api_key_revoke(account=alice.account, key_id=key_id)
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 401


def test_an_account_deletion_leaves_no_answer(alice):
    job_id = _submit(alice)
    _polled(alice, job_id)
    account_delete(account=alice.account)
    assert not _hash(job_id).get(b"body")


def test_a_read_from_before_a_write_is_not_stored(alice):
    job_id = _submit(alice)
    job_uuid = uuid.UUID(job_id)
    # A GET read the hash (nothing yet) and then the row, and a write committed meanwhile.
    seen = _peeked(job_uuid)
    stale = alice.get(f"/v1/jobs/{job_id}").content
    _redis().delete(snapshot_key(job_uuid))
    job_start(job_id=job_id)
    assert not snapshot_store(job_id=job_uuid, gen=seen.gen, account_id=1, body=stale)
    assert b"body" not in _hash(job_id)
    assert _polled(alice, job_id)["status"] == "running"

    # A write committed between the GET's query and its store, after it read the hash.
    current = _peeked(job_uuid)
    assert current.body is not None
    snapshots_forget([job_uuid])
    assert not snapshot_store(job_id=job_uuid, gen=current.gen, account_id=1, body=b"{}")


def test_a_heartbeat_shows_nothing_and_keeps_the_snapshot(alice):
    job_id = _submit(alice)
    job_start(job_id=job_id)
    _polled(alice, job_id)
    generation = _hash(job_id).get(b"gen")
    assert job_heartbeat(job_id=job_id)
    assert _hash(job_id).get(b"gen") == generation
    assert b"body" in _hash(job_id)


def test_without_snapshots_every_get_reads_the_row_and_writes_still_mark(alice, settings):
    settings.PHONOS_JOB_SNAPSHOT_SECONDS = 0
    job_id = _submit(alice)
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 200
    assert _hash(job_id) == {}
    job_start(job_id=job_id)
    assert alice.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    # Writes still mark: a worker set to 0 never leaves an API node's snapshot stale.
    assert _hash(job_id) == {b"gen": b"1"}
