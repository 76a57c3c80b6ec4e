"""`/v1/openapi.json` tells the truth: it is valid, and the running API keeps to it.

Schemathesis derives requests for every operation from the schema (its examples, boundary and
negative cases, then randomised ones), sends them over HTTP to the live server with a real key,
and checks that no answer is a 5xx and that every status, content type and body is one the
schema documents. Two hooks steer part of the generated data towards the interesting paths:
path parameters name real jobs in every state, and prediction requests are sometimes given a
valid sequence, so that randomised names and fields get as far as the database.
"""

import json
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from django.core.management import call_command
from django.test import override_settings
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.accounts.models import Account, ApiKey
from apps.jobs.catalog import submission_clean
from apps.jobs.models import Job
from apps.jobs.services import job_cancel, job_complete, job_fail, job_start, job_submit
from apps.jobs.storage import get_storage
from tests.conftest import ESMFOLD_JOB, Client
from tests.fake_rcsb import fake_rcsb

pytestmark = pytest.mark.django_db(transaction=True)

# A fixed seed, derandomised generation and no example database: every run sends the same
# requests, so a failure found once is found again.
SCHEMATHESIS_SEED = 20251217
MAX_EXAMPLES_PER_OPERATION = 30
REQUEST_TIMEOUT_SECONDS = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
JOB_STATES = ("pending", "running", "completed", "completed_output_gone", "failed", "cancelled")


def openapi_document() -> dict[str, Any]:
    """The schema exactly as `/v1/openapi.json` serves it."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(schema, renderer_context={}))


def test_the_schema_generates_without_warnings_and_is_valid_openapi():
    GENERATOR_STATS.reset()
    call_command("spectacular", validate=True, fail_on_warn=True, stdout=StringIO())


def test_the_served_schema_is_the_one_tested(live_server):
    served = requests.get(f"{live_server.url}/v1/openapi.json", timeout=30)
    assert served.json() == openapi_document()


schema = schemathesis.openapi.from_dict(
    openapi_document(),
    config=schemathesis.Config.from_dict(
        {
            "seed": SCHEMATHESIS_SEED,
            "generation": {
                "max-examples": MAX_EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "database": "none",
            },
        }
    ),
)

# Filled by the `api_client` fixture, read while Schemathesis draws path parameters.
KNOWN_JOBS: dict[str, list[str]] = {}


@schema.hook
def flatmap_path_parameters(context, path_parameters: dict[str, Any] | None) -> st.SearchStrategy:
    """Besides the generated job_id, try the account's real jobs in each state."""
    if not path_parameters or "job_id" not in path_parameters:
        return st.just(path_parameters)
    operation = context.operation
    if operation.method.upper() == "DELETE" or operation.path.endswith("/cancel"):
        known = KNOWN_JOBS["changeable"]
    elif operation.path.endswith("/events"):
        # The event stream stays open until the job ends; only ended jobs close it at once.
        known = KNOWN_JOBS["ended"]
    else:
        known = KNOWN_JOBS["readable"]
    return st.sampled_from(
        [path_parameters, *({**path_parameters, "job_id": job_id} for job_id in known)]
    )


def _submittable(job: Any) -> Any:
    """The same prediction request with a sequence its model accepts and no params."""
    if not isinstance(job, dict) or job.get("model") not in ("esmfold", "alphafold2"):
        return job
    without_params = {key: value for key, value in job.items() if key != "params"}
    return {**without_params, "sequence": ESMFOLD_JOB["sequence"]}


@schema.hook
def flatmap_body(context, body: Any) -> st.SearchStrategy:
    """Besides the generated body, try it made valid enough to create jobs."""
    path = context.operation.path
    if path in ("/v1/predict", "/v1/validate"):
        return st.sampled_from([body, _submittable(body)])
    if path == "/v1/batch" and isinstance(body, dict) and isinstance(body.get("jobs"), list):
        return st.sampled_from(
            [body, {**body, "jobs": [_submittable(job) for job in body["jobs"]]}]
        )
    return st.just(body)


def _job(account: Account, api_key: ApiKey, state: str, output_dir: Path) -> str:
    """A job in `state`, taken there by the same services the API and the workers use."""
    job = job_submit(
        account=account,
        api_key=api_key,
        submission=submission_clean(ESMFOLD_JOB),
        use_cache=False,  # one job per state, each its own
    )
    if state == "cancelled":
        job_cancel(account=account, job_id=job.id)
    elif state != "pending":
        job_start(job_id=job.id)
    if state == "failed":
        job_fail(job_id=job.id, error="The model ran out of GPU memory")
    elif state == "completed":
        pdb = output_dir / f"{job.id}.pdb"
        pdb.write_text("ATOM      1  CA  MET A   1       0.000   0.000   0.000  1.00 87.50  C\n")
        key = f"accounts/{account.id}/jobs/{job.id}/{job.id}.pdb"
        get_storage().put_file(key, pdb, "chemical/x-pdb")
    if state in ("completed", "completed_output_gone"):
        job_complete(job_id=job.id, output_file=f"{job.id}.pdb", summary={}, metadata={})
    return str(job.id)


@pytest.fixture
def api_client(make_client, tmp_path) -> Iterator[Client]:
    """An account that credits, rate limits and the active-job cap never stop."""
    client = make_client(credits=10_000_000, rate_limit=1_000_000, max_active_jobs=10_000)
    api_key = client.account.api_keys.get()
    readable = {state: _job(client.account, api_key, state, tmp_path) for state in JOB_STATES}
    KNOWN_JOBS.update(
        readable=list(readable.values()),
        ended=[job_id for state, job_id in readable.items() if state not in Job.ACTIVE],
        # Cancel and delete change their jobs, so they get their own.
        changeable=[_job(client.account, api_key, state, tmp_path) for state in JOB_STATES],
    )
    # Structure fetches go to a loopback stand-in for RCSB, never the internet.
    with fake_rcsb() as rcsb_url, override_settings(PHONOS_RCSB_URL=rcsb_url):
        yield client
    KNOWN_JOBS.clear()


@schema.parametrize()
# One account and its jobs serve every request generated for an operation, as intended.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_operation_keeps_to_the_schema(case, api_client) -> None:
    case.call_and_validate(
        base_url=api_client.base_url,
        headers={"Authorization": f"Bearer {api_client.key}"},
        checks=CHECKS,
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
