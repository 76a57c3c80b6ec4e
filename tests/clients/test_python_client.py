"""The Python client and the `phonos` command line against the live server and real workers."""

import json
import socket
import struct
import threading
import time

import gemmi
import pytest
import redis
import requests
from django.conf import settings

from apps.jobs.models import Job
from tests.conftest import free_port
from tests.webhooks.conftest import webhook_create

pytestmark = pytest.mark.django_db(transaction=True)

SEQUENCES = [
    "MGSSHHHHHHSSGLVPRGSHM",
    "MKTVRQERLKSIVRILERSKEPV",
    "MADQLTEEQIAEFKEAFSLFDKDG",
    "MSKGEELFTGVVPILVELDGDVNG",
]


def test_typed_models_follow_the_openapi_document(client_env, alice):
    document = requests.get(f"{alice.base_url}/v1/openapi.json", timeout=30).json()
    schemas = document["components"]["schemas"]
    fields = client_env.python(
        """
        import dataclasses, json
        from phonos.models import SCHEMA_OF
        print(json.dumps({schema: sorted(f.name for f in dataclasses.fields(cls)
                                         if f.name not in ("raw", "_client"))
                          for cls, schema in SCHEMA_OF.items()}))
        """,
        alice.key,
        alice.base_url,
    )
    # The one field a schema lacks: the secret, which only `WebhookWithSecret` carries.
    also_allowed = {"Webhook": set(schemas["WebhookWithSecret"]["properties"])}
    for schema, names in fields.items():
        properties = set(schemas[schema]["properties"]) | also_allowed.get(schema, set())
        assert set(schemas[schema].get("required", [])) <= set(names), schema
        assert set(names) <= properties, (schema, set(names) - properties)


@pytest.mark.slow
def test_a_fasta_of_twelve_records_is_folded_and_saved(
    client_env, make_client, start_worker, tiny_esmfold, tmp_path
):
    lab = make_client(credits=1000, rate_limit=1000)
    start_worker(queues="esmfold", PHONOS_ESMFOLD_WEIGHTS=str(tiny_esmfold))
    fasta = tmp_path / "input.fasta"
    fasta.write_text("".join(f">protein_{i} sample {i}\n{SEQUENCES[i % 4]}\n" for i in range(12)))
    output = tmp_path / "structures"
    done = client_env.cli(
        "--json", "predict", "--model", "esmfold", str(fasta), "--wait", "--output", str(output),
        key=lab.key, base_url=lab.base_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    jobs = json.loads(done.stdout)
    assert sorted(job["name"] for job in jobs) == sorted(f"protein_{i}" for i in range(12))
    assert {job["status"] for job in jobs} == {"completed"}
    files = sorted(output.glob("*.pdb"))
    assert [f.name for f in files] == sorted(f"protein_{i}.pdb" for i in range(12))
    for index, path in enumerate(files):
        structure = gemmi.read_structure(str(path))
        residues = sum(len(chain) for chain in structure[0])
        assert residues == len(SEQUENCES[int(path.stem.split("_")[1]) % 4]), index
    # Four distinct sequences: four runs charged, eight identical ones reused at no cost.
    assert sum(job["cached"] for job in jobs) == 8
    assert lab.balance() == 1000 - 4 * 10


def test_a_429_is_retried_after_the_retry_after_the_server_gave(client_env, make_client):
    lab = make_client(rate_limit=5)
    # Use up this key's window, and make that window end in two seconds.
    counter = f"phonos:ratelimit:{lab.account.api_keys.get().id}"
    redis.Redis.from_url(settings.REDIS_URL).set(counter, 5, px=2000)
    assert lab.get("/v1/account").status_code == 429
    result = client_env.python(
        """
        import json, time, phonos
        started = time.monotonic()
        overview = phonos.Client().account()
        print(json.dumps({"seconds": time.monotonic() - started, "balance": overview.balance}))
        """,
        lab.key,
        lab.base_url,
    )
    assert result["balance"] == 1000
    assert result["seconds"] >= 0.9  # it slept for the Retry-After, not a blind backoff


class ResetOnFirstPredict:
    """A TCP proxy that forwards the first `POST /v1/predict` to the server, lets the server
    answer, then resets the client's connection instead of passing the answer on: a submission
    whose response was lost on the way."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.upstream_port = upstream_port
        self.resets = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            submitted = threading.Event()
            threading.Thread(
                target=self._pipe, args=(downstream, upstream, submitted, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(upstream, downstream, submitted, False), daemon=True
            ).start()

    def _pipe(self, source, target, submitted, outbound) -> None:
        try:
            while data := source.recv(65536):
                if outbound and self.resets == 0 and data.startswith(b"POST /v1/predict"):
                    submitted.set()
                if not outbound and submitted.is_set() and self.resets == 0:
                    self.resets += 1
                    target.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    target.close()
                    source.close()
                    return
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.close()
                except OSError:
                    pass

    def stop(self) -> None:
        self._server.close()


def test_a_submission_whose_answer_was_lost_is_retried_and_charged_once(
    client_env, make_client, live_server
):
    lab = make_client(credits=100)
    proxy = ResetOnFirstPredict(int(live_server.url.rsplit(":", 1)[1]))
    try:
        result = client_env.python(
            """
            import json, phonos
            job = phonos.Client().predict("esmfold", "MGSSHHHHHHSSGLVPRGSHM", name="once")
            print(json.dumps({"job_id": job.job_id, "status": job.status}))
            """,
            lab.key,
            proxy.url,
        )
    finally:
        proxy.stop()
    assert proxy.resets == 1
    assert list(Job.objects.filter(account=lab.account).values_list("id", flat=True)) == [
        __import__("uuid").UUID(result["job_id"])
    ]
    assert lab.balance() == 90


def test_cancelling_a_job_ends_wait(client_env, make_client):
    lab = make_client()
    # No worker serves this queue: the job stays pending until it is cancelled.
    job_id = lab.post(
        "/v1/predict", json={"model": "esmfold", "sequence": SEQUENCES[0], "name": "to-cancel"}
    ).json()["job_id"]

    def cancel_soon() -> None:
        time.sleep(1.5)
        assert lab.post(f"/v1/jobs/{job_id}/cancel").status_code == 200

    threading.Thread(target=cancel_soon, daemon=True).start()
    result = client_env.python(
        f"""
        import json, time, phonos
        client = phonos.Client()
        started = time.monotonic()
        job = client.jobs.get("{job_id}").wait(timeout=60, progress=True)
        waited = time.monotonic() - started
        try:
            job.wait(raise_on_failure=True)
            raised = None
        except phonos.JobFailedError as exc:
            raised = exc.error
        print(json.dumps({{"status": job.status, "waited": waited, "raised": raised}}))
        """,
        lab.key,
        lab.base_url,
    )
    assert result["status"] == "cancelled"
    assert result["waited"] < 30
    assert result["raised"] == "Job cancelled"


def test_errors_are_typed_and_the_cli_exits_non_zero(client_env, make_client):
    lab = make_client(credits=5)
    result = client_env.python(
        """
        import json, phonos
        client = phonos.Client()
        caught = {}
        for name, call in [
            ("not_found", lambda: client.jobs.get("00000000-0000-0000-0000-000000000000")),
            ("credits", lambda: client.predict("esmfold", "MGSSHHHHHHSSGLVPRGSHM")),
            ("invalid", lambda: client.predict("esmfold", "not a protein 123")),
        ]:
            try:
                call()
            except phonos.PhonosError as exc:
                caught[name] = [type(exc).__name__, exc.status, exc.error, bool(exc.message)]
        print(json.dumps(caught))
        """,
        lab.key,
        lab.base_url,
    )
    assert result == {
        "not_found": ["NotFoundError", 404, "Not Found", True],
        "credits": ["InsufficientCreditsError", 402, result["credits"][2], True],
        "invalid": ["InvalidRequestError", 400, result["invalid"][2], True],
    }
    missing = client_env.cli(
        "jobs", "show", "00000000-0000-0000-0000-000000000000",
        key=lab.key, base_url=lab.base_url,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "error:" in missing.stderr
    listed = client_env.cli("--json", "models", key=lab.key, base_url=lab.base_url)
    assert listed.returncode == 0
    assert "esmfold" in {model["id"] for model in json.loads(listed.stdout)}
    account = client_env.cli("--json", "account", key=lab.key, base_url=lab.base_url)
    assert json.loads(account.stdout)["credits"]["balance"] == 5


def test_jobs_list_pages_lazily_and_async_client_works(client_env, make_client):
    lab = make_client(credits=10_000)
    for index in range(105):
        Job.objects.create(
            account=lab.account, name=f"job-{index}", model="esmfold", sequence="MG",
            params={}, cost_credits=0, status=Job.Status.CANCELLED,
        )  # fmt: skip
    result = client_env.python(
        """
        import asyncio, json, phonos
        names = [job.name for job in phonos.Client().jobs.list(status="cancelled")]
        async def first_page():
            async with phonos.AsyncClient() as client:
                return [job.name async for job in client.jobs.list()], len(await client.models())
        async_names, models = asyncio.run(first_page())
        print(json.dumps({"names": names, "async": len(async_names), "models": models}))
        """,
        lab.key,
        lab.base_url,
    )
    assert len(result["names"]) == 105 == len(set(result["names"]))
    assert result["async"] == 105
    assert result["models"] >= 3


def test_a_real_delivery_verifies_and_a_tampered_one_does_not(
    client_env, make_client, receiver, loopback_allowed, hook_worker
):
    lab = make_client()
    hook_worker()
    created = webhook_create(lab, receiver.url)
    assert lab.post(f"/v1/webhooks/{created['webhook_id']}/test").status_code == 200
    delivered = receiver.wait_for(1)[0]
    result = client_env.python(
        f"""
        import json, phonos
        headers = {json.dumps(delivered.headers)}
        body = {json.dumps(delivered.body.decode())}
        event = phonos.webhooks.verify(body.encode(), headers, {json.dumps(created["secret"])})
        try:
            phonos.webhooks.verify(body + " ", headers,
                                   {json.dumps(created["secret"])})
            tampered = "accepted"
        except phonos.WebhookVerificationError:
            tampered = "rejected"
        print(json.dumps({{"event": event, "tampered": tampered}}))
        """,
        lab.key,
        lab.base_url,
    )
    assert result["event"] == delivered.json()
    assert result["tampered"] == "rejected"
