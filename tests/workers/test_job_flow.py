"""A job's whole life through real processes: HTTP submit → Celery worker on Redis → the real
ESMFold code (tiny random checkpoint) → S3 (SeaweedFS) → results over HTTP."""

import io
import json
import subprocess
import sys
import threading
import time
import zipfile

import gemmi
import pytest
import requests

from apps.billing.models import LedgerEntry
from apps.jobs.models import Job
from tests.conftest import ESMFOLD_JOB, s3_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SEQUENCE = "MKTVRQERLKSIVRILERSKEPVSGAQLAEELSVSRQVIVQDIAYLRSLGYNIVATPRGYVLAGG"
# Long enough (about 4 s on an idle 2-core machine) to be caught mid-inference.
LONG_JOB = {"model": "esmfold", "sequence": SEQUENCE * 3, "params": {"num_recycles": 16}}


def wait_for_status(client, job_id: str, statuses: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {statuses}: {body}")


def collect_events(client, job_id: str) -> tuple[threading.Thread, list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []

    def follow() -> None:
        with client.get(f"/v1/jobs/{job_id}/events", stream=True) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            name = None
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: ") and name:
                    events.append((name, json.loads(line[len("data: ") :])))

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread, events


def test_an_esmfold_job_runs_end_to_end(alice, charlie, start_worker, s3_storage, tiny_esmfold):
    start_worker(queues="esmfold", PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold), **s3_storage)
    job_id = alice.post("/v1/predict", {**ESMFOLD_JOB, "sequence": SEQUENCE}).json()["job_id"]
    follower, events = collect_events(alice, job_id)

    job = wait_for_status(alice, job_id, {"completed", "failed"})
    assert job["status"] == "completed", job
    follower.join(timeout=10)
    names = [name for name, _ in events]
    stages = [data["stage"] for name, data in events if name == "stage"]
    assert names[-1] == "completed"
    assert "inference" in stages and "writing_outputs" in stages
    assert stages.index("inference") < stages.index("writing_outputs")

    download = alice.get(job["download_url"])
    assert download.status_code == 200
    structure = gemmi.read_pdb_string(download.text)
    residues = [residue for residue in structure[0]["A"]]
    assert len(residues) == len(SEQUENCE)
    assert gemmi.one_letter_code([residue.name for residue in residues]).upper() == SEQUENCE

    confidence = alice.get(f"/v1/jobs/{job_id}/results/confidence").json()
    assert len(confidence["plddt"]) == len(SEQUENCE)
    assert len(confidence["pae"]) == len(SEQUENCE) == len(confidence["pae"][0])
    ca_bfactors = [residue["CA"][0].b_iso for residue in residues]
    assert ca_bfactors == pytest.approx(confidence["plddt"], abs=0.01)

    results = alice.get(f"/v1/jobs/{job_id}/results").json()
    assert results["untrained"] is True
    assert results["summary"]["mean_plddt"] == pytest.approx(
        sum(confidence["plddt"]) / len(SEQUENCE), abs=0.01
    )
    assert 0.0 <= results["summary"]["ptm"] <= 1.0
    assert set(results["files"]) == {"confidence.json", f"{job_id}.pdb"}

    archive = zipfile.ZipFile(io.BytesIO(alice.get(f"/v1/jobs/{job_id}/results/archive").content))
    assert set(archive.namelist()) == {f"{job_id}/confidence.json", f"{job_id}/{job_id}.pdb"}
    assert archive.read(f"{job_id}/{job_id}.pdb") == download.content

    cif = alice.get(f"/v1/jobs/{job_id}/results/structure", params={"format": "cif"})
    assert cif.headers["Content-Type"] == "chemical/x-mmcif"
    from_cif = gemmi.make_structure_from_block(gemmi.cif.read_string(cif.text).sole_block())
    assert from_cif[0].count_atom_sites() == structure[0].count_atom_sites()

    s3 = s3_client(s3_storage["PHONOS_S3_ENDPOINT_URL"])
    stored = s3.list_objects_v2(Bucket=s3_storage["PHONOS_S3_BUCKET"])["Contents"]
    assert {item["Key"].rsplit("/", 1)[1] for item in stored} == {
        "confidence.json",
        f"{job_id}.pdb",
    }
    for path in ("/download", "/results", "/results/confidence", "/results/archive", "/events"):
        assert charlie.get(f"/v1/jobs/{job_id}{path}").status_code == 404
    assert alice.balance() == 990


def test_results_before_completion_answer_400(alice):
    job_id = alice.post("/v1/predict", ESMFOLD_JOB).json()["job_id"]
    for path in ("/results", "/results/confidence", "/results/archive", "/results/structure"):
        response = alice.get(f"/v1/jobs/{job_id}{path}")
        assert response.status_code == 400, path
        assert "pending" in response.json()["message"]


def test_missing_weights_fail_the_job_with_the_setting_to_fix_and_refund(
    alice, start_worker, s3_storage, tmp_path
):
    start_worker(queues="esmfold", PHONOS_ESMFOLD_WEIGHTS=str(tmp_path / "none"), **s3_storage)
    job_id = alice.post("/v1/predict", ESMFOLD_JOB).json()["job_id"]
    job = wait_for_status(alice, job_id, {"completed", "failed"})
    assert job["status"] == "failed"
    assert "PHONOS_ESMFOLD_WEIGHTS" in job["error"]
    assert job["credits_refunded"] == 10
    assert alice.balance() == 1000


def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_once(
    alice, start_worker, s3_storage, tiny_esmfold
):
    timing = {"PHONOS_HEARTBEAT_SECONDS": "1", "PHONOS_STALE_AFTER_SECONDS": "3"}
    env = {"PHONOS_ESMFOLD_WEIGHTS": str(tiny_esmfold), **s3_storage, **timing}
    doomed = start_worker(queues="esmfold", **env)
    job_id = alice.post("/v1/predict", LONG_JOB).json()["job_id"]
    deadline = time.monotonic() + 60
    while Job.objects.get(id=job_id).stage != "inference":
        assert time.monotonic() < deadline, "the job never reached inference"
        time.sleep(0.05)
    doomed.kill_hard()
    assert Job.objects.get(id=job_id).status == "running"

    start_worker(queues="esmfold,light", **env)
    time.sleep(3.5)  # let the dead worker's heartbeat go stale
    from workers.tasks import sweep_jobs

    sweep_jobs.apply_async(queue="light")
    job = wait_for_status(alice, job_id, {"completed", "failed"}, timeout=180)
    assert job["status"] == "completed", job
    assert Job.objects.get(id=job_id).attempts == 2
    assert LedgerEntry.objects.filter(job_id=job_id).count() == 1  # one debit, no refund
    assert alice.balance() == 990
    assert (
        requests.get(
            f"{alice.base_url}{job['download_url']}",
            headers={"Authorization": f"Bearer {alice.key}"},
        ).status_code
        == 200
    )


# A worker's consumer that takes one message off the queue, as Celery's does (unacknowledged:
# the tasks are acks_late), and dies before anything runs it: no clean-up, no ack, no restore.
TAKE_ONE_AND_DIE = """
import os, sys
from kombu import Connection
connection = Connection(sys.argv[1])
message = connection.SimpleQueue(sys.argv[2]).get(block=True, timeout=30)
print(message.headers["id"], flush=True)
os._exit(0)
"""


def test_a_job_taken_by_a_worker_that_died_before_starting_it_is_handed_on(
    alice, start_worker, s3_storage, tiny_esmfold, settings
):
    from django.conf import settings as django_settings
    from redis import Redis

    from apps.jobs.services import job_sweep

    job_id = alice.post("/v1/predict", ESMFOLD_JOB).json()["job_id"]
    deadline = time.monotonic() + 10
    while Job.objects.get(id=job_id).enqueued_at is None:
        assert time.monotonic() < deadline, "the job was never published"
        time.sleep(0.05)
    taken = subprocess.run(
        [sys.executable, "-c", TAKE_ONE_AND_DIE, django_settings.CELERY_BROKER_URL, "esmfold"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert taken.returncode == 0, taken.stderr
    assert taken.stdout.strip() == job_id
    broker = Redis.from_url(django_settings.CELERY_BROKER_URL)
    assert broker.llen("esmfold") == 0 and broker.hlen("unacked") == 1

    # Not yet: a live worker may still be about to start it.
    settings.PHONOS_STALE_AFTER_SECONDS = 2
    assert job_id not in job_sweep().republished
    time.sleep(2.2)
    assert job_sweep().republished == [job_id]
    assert broker.hlen("unacked") == 0 and broker.llen("esmfold") == 1
    assert job_sweep().republished == []  # published once, not at every pass

    start_worker(queues="esmfold", PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold), **s3_storage)
    job = wait_for_status(alice, job_id, {"completed", "failed"})
    assert job["status"] == "completed", job
    assert Job.objects.get(id=job_id).attempts == 1
    assert LedgerEntry.objects.filter(job_id=job_id).count() == 1  # one debit, no refund
    assert alice.balance() == 990


def test_a_message_lost_between_the_queue_and_the_workers_unacked_store_is_published_again(
    alice, settings
):
    """kombu's Redis transport pops a message off the queue and then records it as held: a
    worker SIGKILLed in between loses it (bench/cluster.py hit it once, and the job would have
    waited PHONOS_REPUBLISH_AFTER_SECONDS, an hour). The sweeper sees a published job that
    neither waits in its queue nor is held, and publishes it again; the job behind it, still
    waiting, is left alone."""
    from django.conf import settings as django_settings
    from redis import Redis

    from apps.jobs.services import job_sweep

    first = alice.post("/v1/predict", {**ESMFOLD_JOB, "sequence": "MKTAYIAKQRQISF"}).json()
    time.sleep(1.1)  # more than the sweeper's margin between a publish and its mark
    second = alice.post("/v1/predict", {**ESMFOLD_JOB, "sequence": "MKTAYIAKQRQISA"}).json()
    first, second = first["job_id"], second["job_id"]
    deadline = time.monotonic() + 10
    while Job.objects.filter(id__in=[first, second], enqueued_at__isnull=False).count() < 2:
        assert time.monotonic() < deadline, "the jobs were never published"
        time.sleep(0.05)
    broker = Redis.from_url(django_settings.CELERY_BROKER_URL)
    # What the transport's BRPOP does, and then nothing: the process died before the ack store.
    _, taken = broker.brpop(["esmfold"], timeout=5)
    assert json.loads(taken)["headers"]["id"] == first
    assert broker.llen("esmfold") == 1 and broker.hlen("unacked") == 0

    settings.PHONOS_STALE_AFTER_SECONDS = 2
    assert job_sweep().republished == []  # not yet: a worker may be about to record it
    time.sleep(2.2)
    assert job_sweep().republished == [first]
    waiting = [json.loads(raw)["headers"]["id"] for raw in broker.lrange("esmfold", 0, -1)]
    assert waiting == [first, second]  # the newest on the left: kombu delivers from the right
    assert job_sweep().republished == []  # published once, not at every pass
    # Held by a worker (in the unacked store) or still waiting: never a false alarm.
    time.sleep(2.2)
    assert job_sweep().republished == []


def test_cancelling_a_running_job_stops_it_and_the_worker_carries_on(
    alice, start_worker, s3_storage, tiny_esmfold
):
    worker = start_worker(queues="esmfold", PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold), **s3_storage)
    job_id = alice.post("/v1/predict", LONG_JOB).json()["job_id"]
    deadline = time.monotonic() + 60
    while Job.objects.get(id=job_id).stage != "inference":
        assert time.monotonic() < deadline, "the job never reached inference"
        time.sleep(0.05)
    cancelled = alice.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["credits_refunded"] == 10

    next_id = alice.post("/v1/predict", ESMFOLD_JOB).json()["job_id"]
    assert wait_for_status(alice, next_id, {"completed", "failed"})["status"] == "completed"
    assert alice.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert f"run_job[{job_id}]" in worker.log()
    s3 = s3_client(s3_storage["PHONOS_S3_ENDPOINT_URL"])
    keys = [
        item["Key"]
        for item in s3.list_objects_v2(Bucket=s3_storage["PHONOS_S3_BUCKET"]).get("Contents", [])
    ]
    assert not any(job_id in key for key in keys)
    assert alice.balance() == 990


def test_redirect_downloads_use_short_lived_presigned_urls(
    alice, charlie, s3_storage, settings, tmp_path
):
    from apps.jobs.selectors import job_output_prefix
    from apps.jobs.services import job_complete, job_start
    from apps.jobs.storage import get_storage

    settings.PHONOS_DOWNLOAD_MODE = "redirect"
    job_id = alice.post("/v1/predict", ESMFOLD_JOB).json()["job_id"]
    job = job_start(job_id=job_id)
    pdb = tmp_path / "out.pdb"
    pdb.write_text(
        "ATOM      1  CA  MET A   1       0.000   0.000   0.000  1.00 90.00           C\n"
    )
    get_storage().put_file(f"{job_output_prefix(job=job)}{job_id}.pdb", pdb, "chemical/x-pdb")
    job_complete(job_id=job_id, output_file=f"{job_id}.pdb", summary={}, metadata={})

    redirect = alice.get(f"/v1/jobs/{job_id}/download", allow_redirects=False)
    assert redirect.status_code == 302
    url = redirect.headers["Location"]
    assert url.startswith(s3_storage["PHONOS_S3_ENDPOINT_URL"]) and "X-Amz-Signature" in url
    assert requests.get(url, timeout=10).content == pdb.read_bytes()
    tampered = url.replace(f"{job_id}.pdb", "confidence.json")
    assert requests.get(tampered, timeout=10).status_code == 403
    assert charlie.get(f"/v1/jobs/{job_id}/download", allow_redirects=False).status_code == 404
