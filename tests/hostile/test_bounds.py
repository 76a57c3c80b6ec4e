"""Bounds a hostile client cannot push past, over real HTTP: ligand size (checked before RDKit
parses anything), offsets on every list, a public OpenAPI document built once, and job errors
that never show the worker's paths."""

import sys
import time
from pathlib import Path

import pytest
import requests
from drf_spectacular.generators import SchemaGenerator

from apps.jobs.models import Job
from apps.webhooks.models import Webhook
from apps.webhooks.signing import secret_encrypt, secret_generate
from tests.api.test_auth_and_errors import assert_error
from tests.workers.fake_diffdock import fake_diffdock
from tests.workers.test_docking import LIGAND, PROTEIN_PDB, wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)

# RDKit takes 2 s (a fast machine) to 8 s (the CI machine) to parse a megabyte of SMILES;
# refusing 2 MB unparsed takes a fraction of a second, with room here for a busy machine.
HUGE_SMILES = "C" * 2_000_000
FAST_ANSWER_SECONDS = 3.0
# 151 carbons: 151 characters, far below the character bound, one atom above the heavy-atom one.
TOO_MANY_ATOMS = "C" * 151


def docking(ligand: str, model: str = "vina") -> dict:
    return {"model": model, "params": {"protein_pdb": PROTEIN_PDB, "ligand_smiles": ligand}}


def timed(call) -> tuple[requests.Response, float]:
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


@pytest.mark.parametrize("model", ["vina", "diffdock"])
def test_a_two_megabyte_smiles_is_refused_before_it_is_parsed(alice, model):
    response, elapsed = timed(lambda: alice.post("/v1/predict", json=docking(HUGE_SMILES, model)))
    message = assert_error(response, 400)["message"]
    assert "2000000 characters" in message and "at most 1000" in message
    assert elapsed < FAST_ANSWER_SECONDS, elapsed

    as_sequence = {"model": model, "sequence": HUGE_SMILES, "params": {"protein_pdb": PROTEIN_PDB}}
    response, elapsed = timed(lambda: alice.post("/v1/predict", json=as_sequence))
    assert "at most 1000" in assert_error(response, 400)["message"]
    assert elapsed < FAST_ANSWER_SECONDS, elapsed
    assert alice.balance() == 1000


def test_validate_batch_and_pipelines_refuse_a_huge_smiles_as_fast(alice):
    validated, elapsed = timed(lambda: alice.post("/v1/validate", json=docking(HUGE_SMILES)))
    assert validated.status_code == 200
    assert validated.json()["valid"] is False
    assert "at most 1000" in validated.json()["errors"][0]
    assert elapsed < FAST_ANSWER_SECONDS, elapsed

    batch, elapsed = timed(lambda: alice.post("/v1/batch", json={"jobs": [docking(HUGE_SMILES)]}))
    assert batch.status_code in (200, 400), batch.text
    assert "at most 1000" in batch.text
    assert elapsed < FAST_ANSWER_SECONDS, elapsed

    pipeline = {
        "fold": {"model": "esmfold", "sequence": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"},
        "dock": {"model": "vina", "params": {"ligand_smiles": HUGE_SMILES}},
    }
    response, elapsed = timed(lambda: alice.post("/v1/pipelines", json=pipeline))
    assert "at most 1000" in assert_error(response, 400)["message"]
    assert elapsed < FAST_ANSWER_SECONDS, elapsed
    assert Job.objects.filter(account=alice.account).count() == 0
    assert alice.balance() == 1000


def test_the_heavy_atom_bound_holds_and_is_configurable(alice, settings):
    refused = assert_error(alice.post("/v1/predict", json=docking(TOO_MANY_ATOMS)), 400)
    assert "151 heavy atoms" in refused["message"] and "at most 150" in refused["message"]
    # Hydrogens are not heavy atoms: 150 carbons with their hydrogens pass.
    assert alice.post("/v1/validate", json=docking("C" * 150)).json()["valid"] is True

    settings.PHONOS_MAX_LIGAND_HEAVY_ATOMS = 10
    settings.PHONOS_MAX_LIGAND_SMILES_CHARS = 12
    assert (
        "at most 10"
        in assert_error(alice.post("/v1/predict", json=docking("C" * 11)), 400)["message"]
    )
    assert (
        "at most 12"
        in assert_error(alice.post("/v1/predict", json=docking("C" * 5 + " " * 8)), 400)["message"]
    )
    assert alice.post("/v1/validate", json=docking("CCO")).json()["valid"] is True
    assert alice.balance() == 1000


def _webhook(account) -> Webhook:
    return Webhook.objects.create(
        account=account,
        url="https://hooks.example.org/phonos",
        events=list(Webhook.DEFAULT_EVENTS),
        secret_encrypted=secret_encrypt(secret=secret_generate()),
        secret_hint="test",
    )


def test_every_list_refuses_an_offset_sql_cannot_take(alice):
    webhook = _webhook(alice.account)
    lists = ["/v1/jobs", "/v1/billing/ledger", f"/v1/webhooks/{webhook.id}/deliveries"]
    for path in lists:
        for bad in ({"offset": 10**20}, {"offset": -1}, {"limit": 10**20}, {"offset": "x"}):
            assert_error(alice.get(path, params=bad), 400)
        page = alice.get(path, params={"offset": 10**9})
        assert page.status_code == 200, (path, page.text)
        assert page.json()["pagination"]["has_more"] is False
    # Lists without paging are bounded by what an account may own, and ignore paging params.
    assert alice.get("/v1/webhooks", params={"offset": 10**20}).status_code == 200
    assert alice.get("/v1/models", params={"offset": 10**20}).status_code == 200
    assert_error(alice.get("/v1/usage", params={"days": 91}), 400)
    assert_error(alice.get("/v1/usage", params={"days": 10**20}), 400)
    assert alice.get("/v1/usage", params={"days": 90}).json()["period"]["days"] == 90


def test_dashboard_lists_take_any_page_number(alice, live_server, client):
    from apps.accounts.models import User

    user = User.objects.create_user(username="alice-web", password="pw", account=alice.account)
    client.force_login(user)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    for page in ("99999999999999999999999", "-1", "x", "1e9"):
        response = session.get(f"{live_server.url}/dashboard/jobs/", params={"page": page})
        assert response.status_code == 200, (page, response.status_code)


def test_the_openapi_document_is_built_once_per_process(live_server, monkeypatch):
    builds = []
    original = SchemaGenerator.get_schema

    def counting(self, *args, **kwargs):
        builds.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SchemaGenerator, "get_schema", counting)
    url = f"{live_server.url}/v1/openapi.json"
    first = requests.get(url, timeout=30)
    assert first.status_code == 200
    timings = []
    for _ in range(20):
        response, elapsed = timed(lambda: requests.get(url, timeout=30))
        assert response.content == first.content
        timings.append(elapsed)
    # Built at most once (the first request, unless an earlier test in this process did it).
    assert len(builds) <= 1
    assert sorted(timings)[len(timings) // 2] < 0.05, timings
    yaml = requests.get(url, headers={"Accept": "application/vnd.oai.openapi+json"}, timeout=30)
    assert yaml.status_code == 200 and yaml.json() == first.json()
    assert len(builds) <= 2


def _diffdock_job(alice, start_worker, s3_storage, installation: Path) -> tuple[str, dict]:
    """Run one DiffDock job on a worker using the fake installation; its id and final state."""
    start_worker(
        queues="diffdock",
        PHONOS_DIFFDOCK_DIR=str(installation),
        PHONOS_DIFFDOCK_PYTHON=sys.executable,
        **s3_storage,
    )
    job_id = alice.post(
        "/v1/predict",
        json={
            "model": "diffdock",
            "sequence": LIGAND,
            "params": {"protein_pdb": PROTEIN_PDB, "inference_steps": 12, "samples_per_complex": 2},
        },
    ).json()["job_id"]
    return job_id, wait_for_status(alice, job_id, {"completed", "failed"})


@pytest.mark.slow
def test_a_diffdock_failure_shows_no_server_path(alice, start_worker, s3_storage, tmp_path):
    installation = tmp_path / "DiffDock"
    site_packages = Path(sys.prefix) / "lib" / "site-packages" / "torch" / "cuda" / "memory.py"
    fake_diffdock(
        installation,
        fail_with=(
            f'  File "{installation}/inference.py", line 40, in <module>\n'
            f'  File "{site_packages}", line 9, in alloc\n'
            "torch.OutOfMemoryError: CUDA out of memory"
        ),
    )
    _, job = _diffdock_job(alice, start_worker, s3_storage, installation)
    assert job["status"] == "failed"
    error = job["error"]
    assert "DiffDock exited with status 1" in error and "CUDA out of memory" in error
    assert '"…/inference.py", line 40' in error and "…/memory.py" in error
    for secret in (str(tmp_path), str(installation), sys.prefix, "/tmp/"):
        assert secret not in error, error
    assert alice.balance() == 1000


@pytest.mark.slow
def test_a_diffdock_log_a_tenant_downloads_shows_no_server_path(
    alice, start_worker, s3_storage, tmp_path
):
    installation = fake_diffdock(tmp_path / "DiffDock")
    job_id, job = _diffdock_job(alice, start_worker, s3_storage, installation)
    assert job["status"] == "completed", job["error"]
    log = alice.get(f"/v1/jobs/{job_id}/results/archive")
    assert log.status_code == 200
    import io
    import zipfile

    text = zipfile.ZipFile(io.BytesIO(log.content)).read(f"{job_id}/diffdock.log").decode()
    assert "csv=…/complexes.csv" in text
    assert str(tmp_path) not in text and "/tmp/" not in text


@pytest.mark.slow
def test_a_vina_failure_shows_no_server_path(alice, start_worker, s3_storage, tmp_path):
    start_worker(queues="vina", TMPDIR=str(tmp_path), **s3_storage)
    # RDKit reads xenon fluoride; meeko has no atom type for xenon, and says so at length.
    response = alice.post(
        "/v1/predict",
        json={
            "model": "vina",
            "sequence": "[Xe]F",
            "params": {"protein_pdb": PROTEIN_PDB, "exhaustiveness": 1, "num_poses": 1},
        },
    )
    assert response.status_code == 200, response.text
    job = wait_for_status(alice, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "failed", job
    assert "meeko could not write the ligand" in job["error"]
    assert str(tmp_path) not in job["error"] and "/tmp/" not in job["error"], job["error"]
    assert alice.balance() == 1000
