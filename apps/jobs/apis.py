import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, tzinfo
from typing import Any

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponseRedirect, QueryDict
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.api_request import ApiKeyRequest
from apps.accounts.authentication import BearerKeyLean
from apps.accounts.models import Account, ApiKey
from apps.common.apis import (
    LeanPeek,
    LeanReply,
    PhonosApiView,
    error_responses,
    json_render,
    lean_view,
)
from apps.common.exceptions import InvalidInput, NotFound
from apps.common.pagination import (
    PageQuerySerializer,
    PaginationSerializer,
    page_description,
    paginate,
)
from apps.common.parsers import json_body_parse, json_body_plain
from apps.common.request_usage import request_usage
from apps.jobs.availability import model_availability
from apps.jobs.catalog import CleanedSubmission, pipeline_clean, submission_clean
from apps.jobs.idempotency import MAX_KEY_LENGTH, idempotent_call, request_fingerprint
from apps.jobs.job_keys import msa_cache_path
from apps.jobs.models import JOB_BODY_FIELDS, Job
from apps.jobs.registry import MODELS
from apps.jobs.selectors import (
    JOB_LIST_ITEM_FIELDS,
    job_get,
    job_list,
    job_output_prefix,
    job_values_get,
    job_values_page,
)
from apps.jobs.services import (
    job_cancel,
    job_delete,
    job_submit,
    job_submit_batch,
    pipeline_submit,
    reusable_job_find,
    submission_key,
)
from apps.jobs.snapshots import Snapshot, snapshot_key, snapshot_store, snapshots_enabled
from apps.jobs.storage import get_storage
from apps.jobs.waits import MAX_WAIT_SECONDS, job_end_wait, prefer_wait_parse

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    OpenApiParameter.HEADER,
    required=False,
    description="Repeat a request safely: the same key and body within 24 h replays the "
    "first response; the same key with another body answers 409.",
)

ESMFOLD_EXAMPLE = {
    "model": "esmfold",
    "sequence": "MGSSHHHHHHSSGLVPRGSHMASMTGGQQMGRGS",
    "name": "My Protein Structure",
}
PREDICT_EXAMPLES = [OpenApiExample("ESMFold", value=ESMFOLD_EXAMPLE, request_only=True)]

JOB_ID = OpenApiParameter(
    "job_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="Job ID returned from /v1/predict",
    examples=[OpenApiExample("A job", value="550e8400-e29b-41d4-a716-446655440000")],
)


@extend_schema_field(
    {
        "type": "object",
        "description": "Model-specific parameters: the schema of the chosen model "
        "(GET /v1/models lists the same rules per model)",
        "anyOf": [spec.params_json_schema() for spec in MODELS.values()],
    }
)
class ModelParamsField(serializers.DictField):
    """Documents params from the model registry; apps.jobs.catalog checks them."""


class PredictInputSerializer(serializers.Serializer[Any]):
    """Documents the request body; the checks themselves live in apps.jobs.catalog."""

    model = serializers.ChoiceField(choices=list(MODELS))
    sequence = serializers.CharField(
        help_text="Protein sequence, or the ligand's SMILES for docking models"
    )
    name = serializers.CharField(required=False, max_length=200)
    params = ModelParamsField(required=False)
    webhook_url = serializers.CharField(
        required=False,
        max_length=2048,
        help_text="This job's own webhook, signed with the account's webhook secret "
        "(docs/webhooks.md); a URL the SSRF guard refuses answers 400",
    )
    webhook_events = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Events for webhook_url; by default job.completed, job.failed, job.cancelled",
    )


# Said in words rather than as an enum: a second `status` enum (webhook deliveries have one)
# would need ENUM_NAME_OVERRIDES for both to name them apart.
JOB_STATUS_HELP = "One of: " + ", ".join(Job.Status.values)


class JobMetricsSerializer(serializers.Serializer[Any]):
    queue_seconds = serializers.FloatField(
        allow_null=True, help_text="From submission to the first worker claim"
    )
    run_seconds = serializers.FloatField(
        allow_null=True, help_text="The model's wall time on the job's last attempt"
    )
    batch_size = serializers.IntegerField(
        allow_null=True, help_text="The jobs that shared its forward pass (1: it ran alone)"
    )


class JobSerializer(serializers.Serializer[Any]):
    """A job as `GET /v1/jobs/{id}` shows it; output fields appear once the job completed."""

    job_id = serializers.UUIDField(source="id")
    name = serializers.CharField()
    model = serializers.CharField()
    status = serializers.CharField(help_text=JOB_STATUS_HELP)
    stage = serializers.CharField()
    progress = serializers.FloatField(allow_null=True)
    credits_used = serializers.IntegerField(source="cost_credits")
    credits_refunded = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(required=False)
    output_file = serializers.CharField(required=False)
    download_url = serializers.CharField(required=False)
    depends_on = serializers.UUIDField(
        source="depends_on_id",
        required=False,
        help_text="A pipeline's dock: the fold job whose structure it docks against",
    )
    # The request echoed, as checked and stored, so a client can reproduce the run.
    sequence = serializers.CharField(help_text="The protein sequence, or the ligand's SMILES")
    params = serializers.DictField(help_text="The model parameters the job runs with")
    metrics = serializers.SerializerMethodField()

    @extend_schema_field(JobMetricsSerializer)
    def get_metrics(self, job: Job) -> dict[str, float | int | None]:
        raise NotImplementedError  # documents `metrics`; job_body writes it

    cached = serializers.BooleanField(
        help_text="Served without a run of its own: an identical earlier result was reused, "
        "or it rode on an identical job's run"
    )
    cached_from = serializers.UUIDField(
        source="cached_from_id",
        allow_null=True,
        help_text="The job whose result or run it was served from; null when it ran itself",
    )
    webhook_url = serializers.CharField(
        allow_null=True, help_text="The job's own webhook; its deliveries: webhook-deliveries"
    )
    webhook_events = serializers.ListField(child=serializers.CharField())

    def to_representation(self, job: Job) -> dict[str, Any]:
        return job_body({name: getattr(job, name) for name in JOB_BODY_FIELDS})


def _when(value: datetime | None, zone: tzinfo) -> str | None:
    """DRF's DateTimeField.to_representation of an aware datetime, without the field: ISO 8601
    in the current time zone `zone`, "Z" for UTC, so the hand-built bodies below write exactly
    what the serializers they replace wrote (tests/api/test_hot_path.py compares them byte for
    byte). The caller looks the zone up once per body (or page): the lookup, a context-local
    read, cost more than the formatting, 50 times per page."""
    if value is None:
        return None
    text = value.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _completed_with_output(job: Mapping[str, Any]) -> bool:
    return job["status"] == Job.Status.COMPLETED and bool(job["output_file"])


def job_body(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job as `GET /v1/jobs/{id}` shows it (JobSerializer documents the fields), built from
    the values of JOB_BODY_FIELDS: from a row on the hot path, from an instance elsewhere.
    `output_file` and `download_url` appear once it completed, `error` once it failed,
    `depends_on` for a pipeline's dock."""
    job_id = str(job["id"])
    started_at, created_at, progress = job["started_at"], job["created_at"], job["progress"]
    zone = timezone.get_current_timezone()
    body: dict[str, Any] = {
        "job_id": job_id,
        "name": str(job["name"]),
        "model": str(job["model"]),
        "status": str(job["status"]),
        "stage": str(job["stage"]),
        "progress": None if progress is None else float(progress),
        "credits_used": int(job["cost_credits"]),
        "credits_refunded": int(job["credits_refunded"]),
        "created_at": _when(created_at, zone),
        "updated_at": _when(job["updated_at"], zone),
        "started_at": _when(started_at, zone),
        "finished_at": _when(job["finished_at"], zone),
    }
    if job["error"]:
        body["error"] = str(job["error"])
    completed = _completed_with_output(job)
    if completed:
        body["output_file"] = str(job["output_file"])
    if job["depends_on_id"] is not None:
        body["depends_on"] = str(job["depends_on_id"])
    run_seconds = job["run_seconds"]
    body |= {
        "sequence": str(job["sequence"]),
        "params": {str(key): value for key, value in job["params"].items()},
        "metrics": {
            "queue_seconds": round((started_at - created_at).total_seconds(), 3)
            if started_at
            else None,
            "run_seconds": round(run_seconds, 3) if run_seconds is not None else None,
            "batch_size": job["batch_size"],
        },
        "cached": bool(job["cached"]),
        "cached_from": str(job["cached_from_id"]) if job["cached_from_id"] is not None else None,
        "webhook_url": job["webhook_url"] or None,
        "webhook_events": [str(event) for event in job["webhook_events"]],
    }
    if completed:
        body["download_url"] = f"/v1/jobs/{job_id}/download"
    return body


def job_list_item_body(job: Mapping[str, Any], zone: tzinfo | None = None) -> dict[str, Any]:
    """A job as `GET /v1/jobs` lists it (JobListItemSerializer), from JOB_LIST_ITEM_FIELDS;
    `zone`, the current time zone, looked up once for a page."""
    job_id = str(job["id"])
    body = {
        "job_id": job_id,
        "name": str(job["name"]),
        "status": str(job["status"]),
        "model": str(job["model"]),
        "created_at": _when(job["created_at"], zone or timezone.get_current_timezone()),
    }
    if _completed_with_output(job):
        body["download_url"] = f"/v1/jobs/{job_id}/download"
    return body


class JobListItemSerializer(serializers.Serializer[Any]):
    job_id = serializers.UUIDField(source="id")
    name = serializers.CharField()
    status = serializers.CharField(help_text=JOB_STATUS_HELP)
    model = serializers.CharField()
    created_at = serializers.DateTimeField()
    download_url = serializers.CharField(required=False)

    def to_representation(self, job: Job) -> dict[str, Any]:
        return job_list_item_body({name: getattr(job, name) for name in JOB_LIST_ITEM_FIELDS})


class ModelsApi(PhonosApiView):
    @extend_schema_serializer(component_name="ModelList")
    class OutputSerializer(serializers.Serializer[Any]):
        class ModelSerializer(serializers.Serializer[Any]):
            id = serializers.CharField()
            name = serializers.CharField()
            description = serializers.CharField()
            type = serializers.CharField()
            cost_credits = serializers.IntegerField()
            input = serializers.ChoiceField(
                choices=["protein", "ligand"],
                help_text="What `sequence` holds: a protein sequence or a ligand's SMILES",
            )
            # Only for models whose price depends on the input (alphafold2 complexes).
            cost_rule = serializers.DictField(required=False)
            max_sequence_length = serializers.IntegerField()
            params = serializers.DictField(
                help_text="Each parameter's type, default, bounds, choices and meaning"
            )
            params_schema = serializers.DictField(help_text="The params as a JSON Schema")
            outputs = serializers.DictField(
                help_text="The primary file (`download_url`), the files stored and the keys of "
                "the result summary"
            )
            available = serializers.BooleanField(
                help_text="Whether a live worker has this model loaded and ready; when false, "
                "submissions for it answer 503"
            )

        models = ModelSerializer(many=True)

    @extend_schema(
        operation_id="list_models",
        description="Retrieve the available models, with their costs and parameters.",
        responses={200: OutputSerializer, **error_responses()},
    )
    def get(self, request: Request) -> Response:
        availability = model_availability()
        models = []
        for spec in MODELS.values():
            models.append(
                {
                    **spec.public(),
                    "max_sequence_length": spec.max_length,
                    "params": spec.params_public(),
                    "params_schema": spec.params_json_schema(),
                    "outputs": spec.outputs.public(),
                    "available": availability[spec.id],
                }
            )
        return Response({"models": models})


class PredictOutputSerializer(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    job_id = serializers.UUIDField()
    model = serializers.CharField()
    status = serializers.CharField()
    credits_used = serializers.IntegerField()
    message = serializers.CharField()


def _predict_body(job: Job) -> dict[str, Any]:
    return {
        "success": True,
        "job_id": str(job.id),
        "model": job.model,
        "status": job.status,
        "credits_used": job.cost_credits,
        "message": "Job submitted successfully",
    }


def _idempotent_call(
    request: HttpRequest | Request,
    *,
    account: Account,
    data: Any,
    produce: Callable[[], tuple[int, dict[str, Any]]],
) -> tuple[int, Any, bool]:
    """`produce` run once per Idempotency-Key, fingerprinted over the parsed body `data`."""
    return idempotent_call(
        account=account,
        key=request.headers.get("Idempotency-Key"),
        fingerprint=request_fingerprint(path=request.path, body=data),
        produce=produce,
    )


def _replayed_headers(replayed: bool) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if replayed else {}


def _idempotent_response(
    request: ApiKeyRequest, produce: Callable[[], tuple[int, dict[str, Any]]]
) -> Response:
    status, body, replayed = _idempotent_call(
        request, account=request.user, data=request.data, produce=produce
    )
    return Response(body, status=status, headers=_replayed_headers(replayed))


CACHE_CONTROL_HEADER = OpenApiParameter(
    "Cache-Control",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="`no-cache` runs the model even when an identical result exists or an "
    "identical job is in flight (as `params.cache: false` does)",
)
PREFER_HEADER = OpenApiParameter(
    "Prefer",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description=f"`wait=N` (N at most {MAX_WAIT_SECONDS}): hold the answer until the job ends "
    "or N seconds pass. Ended in time: the full job, as GET /v1/jobs/{id} shows it, with "
    "`Preference-Applied: wait=N`; otherwise the usual answer. A busy server may answer at once.",
)


def _no_cache_asked(request: HttpRequest | Request) -> bool:
    directives = request.headers.get("Cache-Control", "").lower().replace(" ", "").split(",")
    return "no-cache" in directives or "no-store" in directives


def _predict_submit(
    request: HttpRequest | Request, *, api_key: ApiKey, data: Any
) -> tuple[int, Any, bool]:
    """POST /v1/predict's work, for PredictApi and its lean path alike: the parsed body `data`
    checked, the job submitted once per Idempotency-Key; (status, body, replayed)."""
    submission = submission_clean(data)
    usage = request_usage(request)
    usage.model = submission.spec.id
    use_cache = not _no_cache_asked(request)

    def produce() -> tuple[int, dict[str, Any]]:
        job = job_submit(
            account=api_key.account, api_key=api_key, submission=submission, use_cache=use_cache
        )
        usage.credits = job.cost_credits  # charged now; a replay charges nothing
        return 200, _predict_body(job)

    return _idempotent_call(request, account=api_key.account, data=data, produce=produce)


class PredictApi(PhonosApiView):
    @extend_schema(
        operation_id="submit_prediction",
        description="Submit a new prediction job to be processed asynchronously; its cost is "
        "debited at once and refunded if it fails or is cancelled. A request identical to a "
        "completed job of the account (same model, weights, canonical input and params) "
        "completes at once from that result (`cached: true`); one identical to a job still "
        "running rides on its run.",
        request=PredictInputSerializer,
        examples=PREDICT_EXAMPLES,
        parameters=[IDEMPOTENCY_HEADER, CACHE_CONTROL_HEADER, PREFER_HEADER],
        responses={
            200: OpenApiResponse(
                PredictOutputSerializer,
                description="The job submitted; with `Prefer: wait` and a job that ended in "
                "time, the full job (JobDetail) instead",
            ),
            **error_responses(400, 402, 409, 413, 415, 503),
        },
    )
    def post(self, request: ApiKeyRequest) -> Response:
        status, body, replayed = _predict_submit(request, api_key=request.auth, data=request.data)
        response = Response(body, status=status, headers=_replayed_headers(replayed))
        wait = prefer_wait_parse(request.headers.get("Prefer"))
        if wait is None or response.status_code != 200:
            return response
        job_id = response.data["job_id"]
        if not job_end_wait(job_id=job_id, seconds=wait):
            return response
        ended = Response(JobSerializer(job_get(account=request.user, job_id=job_id)).data)
        ended["Preference-Applied"] = f"wait={wait}"
        for header in ("Idempotent-Replayed",):
            if header in response:
                ended[header] = response[header]
        return ended


class CacheCheckApi(PhonosApiView):
    @extend_schema_serializer(component_name="CacheCheck")
    class OutputSerializer(serializers.Serializer[Any]):
        cached = serializers.BooleanField(
            help_text="Submitting this request now would complete at once from a stored result"
        )
        job_id = serializers.UUIDField(
            allow_null=True, help_text="The completed job whose result it would reuse"
        )
        msa_cached = serializers.BooleanField(
            help_text="AlphaFold2: the MSA of every chain is in the MSA cache already"
        )

    @extend_schema(
        operation_id="check_cache",
        description="Whether a prediction request would be served from a stored result, "
        "without submitting it; free of charge.",
        request=PredictInputSerializer,
        examples=PREDICT_EXAMPLES,
        responses={200: OutputSerializer, **error_responses(400, 413, 415)},
    )
    def post(self, request: ApiKeyRequest) -> Response:
        submission = submission_clean(request.data)
        key = submission_key(submission=submission, account_id=request.user.id)
        match = reusable_job_find(key=key, account_id=request.user.id)
        return Response(
            {
                "cached": match is not None,
                "job_id": str(match.id) if match is not None else None,
                "msa_cached": _msa_cached(submission),
            }
        )


def _msa_cached(submission: CleanedSubmission) -> bool:
    """Whether the AlphaFold2 worker would find every chain's MSA in its cache. Answerable
    where the API sees the workers' PHONOS_MSA_CACHE_DIR (a shared volume); false elsewhere."""
    if submission.spec.id != "alphafold2":
        return False
    if submission.params.get("msa_mode") != "mmseqs2_server" or not settings.PHONOS_MSA_CACHE_DIR:
        return False
    from pathlib import Path

    cache_dir = Path(settings.PHONOS_MSA_CACHE_DIR)
    chains = set(submission.sequence.split(":"))
    return all(msa_cache_path(cache_dir, chain).is_file() for chain in chains)


class PipelineApi(PhonosApiView):
    @extend_schema_serializer(component_name="Pipeline")
    class InputSerializer(serializers.Serializer[Any]):
        name = serializers.CharField(required=False, max_length=200)
        fold = PredictInputSerializer(help_text="A structure prediction request")
        dock = PredictInputSerializer(
            help_text="A docking request without params.protein_pdb or params.protein_job_id: "
            "its receptor is the fold's structure"
        )
        webhook_url = serializers.CharField(
            required=False, max_length=2048, help_text="A webhook for both jobs"
        )
        webhook_events = serializers.ListField(child=serializers.CharField(), required=False)

    @extend_schema_serializer(component_name="PipelineSubmitted")
    class OutputSerializer(serializers.Serializer[Any]):
        class PipelineIdsSerializer(serializers.Serializer[Any]):
            fold_job_id = serializers.UUIDField()
            dock_job_id = serializers.UUIDField()

        success = serializers.BooleanField()
        pipeline = PipelineIdsSerializer()
        credits_used = serializers.IntegerField()
        jobs = JobSerializer(many=True)

    @extend_schema(
        operation_id="submit_pipeline",
        description="Submit a structure prediction and a docking against its result together. "
        "Both are charged at once; the dock waits (stage `waiting_for_dependency`) until the "
        "fold completes, and fails, refunded, if the fold fails or is cancelled.",
        request=InputSerializer,
        examples=[
            OpenApiExample(
                "ESMFold then Vina",
                value={
                    "name": "Fold and dock",
                    "fold": {"model": "esmfold", "sequence": ESMFOLD_EXAMPLE["sequence"]},
                    "dock": {"model": "vina", "params": {"ligand_smiles": "CCO"}},
                },
                request_only=True,
            )
        ],
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: OutputSerializer, **error_responses(400, 402, 409, 413, 415, 503)},
    )
    def post(self, request: ApiKeyRequest) -> Response:
        cleaned = pipeline_clean(request.data)

        def produce() -> tuple[int, dict[str, Any]]:
            pipeline = pipeline_submit(account=request.user, api_key=request.auth, pipeline=cleaned)
            jobs = [pipeline.fold, pipeline.dock]
            request_usage(request).credits = sum(job.cost_credits for job in jobs)
            return 200, {
                "success": True,
                "pipeline": {
                    "fold_job_id": str(pipeline.fold.id),
                    "dock_job_id": str(pipeline.dock.id),
                },
                "credits_used": sum(job.cost_credits for job in jobs),
                "jobs": JobSerializer(jobs, many=True).data,
            }

        return _idempotent_response(request, produce)


class ValidateApi(PhonosApiView):
    @extend_schema_serializer(component_name="Validation")
    class OutputSerializer(serializers.Serializer[Any]):
        valid = serializers.BooleanField()
        # DRF's metaclass moves declared fields off the class, so this field leaves the
        # serializer's `errors` property alone; the stubs see a plain class attribute.
        errors = serializers.ListField(child=serializers.CharField())  # type: ignore[assignment]
        model = serializers.CharField(allow_null=True)
        sequence_length = serializers.IntegerField(allow_null=True)
        credits_cost = serializers.IntegerField(allow_null=True)
        credits_balance = serializers.IntegerField()
        sufficient_credits = serializers.BooleanField()

    @extend_schema(
        operation_id="validate_prediction",
        description="Check a prediction request, and whether the account can afford it, "
        "without submitting it. An invalid request is answered 200 with `valid: false`.",
        request=PredictInputSerializer,
        examples=PREDICT_EXAMPLES,
        responses={200: OutputSerializer, **error_responses(400, 413, 415)},
    )
    def post(self, request: ApiKeyRequest) -> Response:
        # The account may come from the key cache, seconds old: read the balance itself.
        request.user.refresh_from_db(fields=["credit_balance"])
        balance = request.user.credit_balance
        try:
            submission = submission_clean(request.data)
        except InvalidInput as error:
            model = request.data.get("model") if isinstance(request.data, dict) else None
            # Any JSON value may stand here, a list or an object too: look up strings only.
            spec = MODELS.get(model) if isinstance(model, str) else None
            return Response(
                {
                    "valid": False,
                    "errors": [error.message],
                    "model": spec.id if spec else None,
                    "sequence_length": None,
                    "credits_cost": spec.cost_credits if spec else None,
                    "credits_balance": balance,
                    "sufficient_credits": False,
                }
            )
        return Response(
            {
                "valid": True,
                "errors": [],
                "model": submission.spec.id,
                "sequence_length": len(submission.sequence.replace(":", ""))
                if submission.spec.type != "docking"
                else None,
                "credits_cost": submission.cost,
                "credits_balance": balance,
                "sufficient_credits": balance >= submission.cost,
            }
        )


class BatchApi(PhonosApiView):
    @extend_schema_serializer(component_name="Batch")
    class InputSerializer(serializers.Serializer[Any]):
        jobs = PredictInputSerializer(many=True)

    @extend_schema_serializer(component_name="BatchResult")
    class OutputSerializer(serializers.Serializer[Any]):
        @extend_schema_serializer(component_name="BatchSummary")
        class SummarySerializer(serializers.Serializer[Any]):
            total = serializers.IntegerField()
            successful = serializers.IntegerField()
            failed = serializers.IntegerField()
            total_credits_used = serializers.IntegerField()

        @extend_schema_serializer(component_name="BatchItemResult")
        class ItemSerializer(serializers.Serializer[Any]):
            index = serializers.IntegerField()
            success = serializers.BooleanField()
            job_id = serializers.UUIDField(required=False)
            model = serializers.CharField(required=False)
            credits_used = serializers.IntegerField()
            charged = serializers.BooleanField()
            error = serializers.CharField(required=False)
            message = serializers.CharField(required=False)

        success = serializers.BooleanField()
        summary = SummarySerializer()
        results = ItemSerializer(many=True)

    @extend_schema(
        operation_id="submit_batch",
        description="Submit up to 10 prediction jobs at once. Each is checked and charged on its "
        "own: the results say which were submitted and why the others were not.",
        request=InputSerializer,
        examples=[
            OpenApiExample(
                "Two ESMFold jobs",
                value={"jobs": [ESMFOLD_EXAMPLE, {**ESMFOLD_EXAMPLE, "name": "Protein 2"}]},
                request_only=True,
            )
        ],
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: OutputSerializer, **error_responses(400, 409, 413, 415, 503)},
    )
    def post(self, request: ApiKeyRequest) -> Response:
        if not isinstance(request.data, dict) or "jobs" not in request.data:
            raise InvalidInput("jobs is required: a list of up to 10 prediction requests")
        items = request.data["jobs"]

        def produce() -> tuple[int, dict[str, Any]]:
            outcomes = job_submit_batch(account=request.user, api_key=request.auth, items=items)
            results: list[dict[str, Any]] = []
            for outcome in outcomes:
                if outcome.job is not None:
                    results.append(
                        {
                            "index": outcome.index,
                            "success": True,
                            "job_id": str(outcome.job.id),
                            "model": outcome.job.model,
                            "credits_used": outcome.job.cost_credits,
                            "charged": True,
                        }
                    )
                else:
                    item = items[outcome.index]
                    model = item.get("model") if isinstance(item, dict) else None
                    results.append(
                        {
                            "index": outcome.index,
                            "success": False,
                            **({"model": model} if isinstance(model, str) else {}),
                            "credits_used": 0,
                            "charged": False,
                            "error": outcome.error,
                            "message": outcome.message,
                        }
                    )
            successful = sum(1 for item in results if item["success"])
            charged = sum(item["credits_used"] for item in results)
            request_usage(request).credits = charged
            return 200, {
                "success": successful == len(results),
                "summary": {
                    "total": len(results),
                    "successful": successful,
                    "failed": len(results) - successful,
                    "total_credits_used": charged,
                },
                "results": results,
            }

        return _idempotent_response(request, produce)


class JobListApi(PhonosApiView):
    @extend_schema_serializer(component_name="JobList")
    class OutputSerializer(serializers.Serializer[Any]):
        jobs = JobListItemSerializer(many=True)
        pagination = PaginationSerializer()

    class FilterSerializer(PageQuerySerializer):
        # `all` (the documented default) and an empty value mean no filter.
        status = serializers.ChoiceField(
            choices=["all", *Job.Status.values], required=False, allow_blank=True
        )
        model = serializers.ChoiceField(choices=["all", *MODELS], required=False, allow_blank=True)
        search = serializers.CharField(required=False, max_length=200)

    @extend_schema(
        operation_id="list_jobs",
        description="List your jobs, newest first, optionally filtered by status or model.",
        parameters=[FilterSerializer],
        responses={200: OutputSerializer, **error_responses(400)},
    )
    def get(self, request: ApiKeyRequest) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        jobs = job_list(
            account=request.user,
            status=params.get("status") if params.get("status") != "all" else None,
            model=params.get("model") if params.get("model") != "all" else None,
            search=params.get("search"),
        )
        page, pagination = paginate(jobs, limit=params["limit"], offset=params["offset"])
        return Response(
            {"jobs": JobListItemSerializer(page, many=True).data, "pagination": pagination}
        )


class JobDetailApi(PhonosApiView):
    @extend_schema_serializer(component_name="JobDeleted")
    class DeleteOutputSerializer(serializers.Serializer[Any]):
        success = serializers.BooleanField()
        job_id = serializers.UUIDField()
        status = serializers.CharField()
        message = serializers.CharField()

    @extend_schema(
        operation_id="get_job",
        description="Retrieve the status of a job; `output_file` and `download_url` appear once "
        "it completed, `error` once it failed.",
        parameters=[JOB_ID],
        responses={200: JobSerializer, **error_responses(404)},
    )
    def get(self, request: ApiKeyRequest, job_id: str) -> Response:
        return Response(JobSerializer(job_get(account=request.user, job_id=job_id)).data)

    @extend_schema(
        operation_id="delete_job",
        description="Delete a completed, failed or cancelled job and its outputs.",
        parameters=[JOB_ID],
        responses={200: DeleteOutputSerializer, **error_responses(400, 404, 409)},
    )
    def delete(self, request: ApiKeyRequest, job_id: str) -> Response:
        job = job_delete(account=request.user, job_id=job_id)
        return Response(
            {
                "success": True,
                "job_id": str(job.id),
                "status": "deleted",
                "message": "Job deleted successfully",
            }
        )


# --- The hot path without DRF's dispatch (apps.common.apis.lean_view) -------------------------


def _job_detail_prepare(
    request: HttpRequest, job_id: str
) -> Callable[[ApiKey], LeanReply] | LeanPeek:
    """The job from its snapshot where one is current (apps.jobs.snapshots), read in the rate
    limit's round trip; else from PostgreSQL, keeping what it read as the next snapshot."""
    try:
        job_uuid = uuid.UUID(job_id)
    except ValueError:
        job_uuid = None
    if job_uuid is None or not snapshots_enabled():
        return lambda api_key: LeanReply(
            job_body(job_values_get(account_id=api_key.account_id, job_id=job_id))
        )

    def read(api_key: ApiKey, peeked: list[bytes] | None) -> LeanReply:
        snapshot = Snapshot(peeked) if peeked is not None else None
        if snapshot is not None and snapshot.body is not None:
            if snapshot.account_id != api_key.account_id:
                raise NotFound(f"Job {job_id} not found")
            return LeanReply(None, rendered=snapshot.body)
        rendered = json_render(
            job_body(job_values_get(account_id=api_key.account_id, job_id=job_id))
        )
        if snapshot is not None:
            snapshot_store(
                job_id=job_uuid, gen=snapshot.gen, account_id=api_key.account_id, body=rendered
            )
        return LeanReply(None, rendered=rendered)

    return LeanPeek(snapshot_key(job_uuid), read)


_LIST_QUERY = frozenset({"limit", "offset", "status", "model"})
_LIST_STATUSES = frozenset({"", "all", *Job.Status.values})
_LIST_MODELS = frozenset({"", "all", *MODELS})
_DIGITS = re.compile("[0-9]{1,10}")


def _list_number(query: QueryDict, name: str, low: int, high: int) -> int | None:
    """What JobListApi.FilterSerializer reads from a plain decimal in its range (None
    otherwise: the serializer judges the rest)."""
    text = query.get(name)
    if text is None:
        default: Any = JobListApi.FilterSerializer._declared_fields[name].default
        return int(default)
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        return None
    return int(text)


def _job_list_prepare(request: HttpRequest) -> Callable[[ApiKey], LeanReply] | None:
    """The common listings (limit, offset, status and model filters, values the filter
    serializer would accept as they are); anything else, `search` included, goes to the view."""
    query = request.GET
    if not _LIST_QUERY.issuperset(query):
        return None
    status, model = query.get("status", ""), query.get("model", "")
    limit = _list_number(query, "limit", 1, 100)
    offset = _list_number(query, "offset", 0, 1_000_000_000)
    if limit is None or offset is None or status not in _LIST_STATUSES or model not in _LIST_MODELS:
        return None

    def read(api_key: ApiKey) -> LeanReply:
        zone = timezone.get_current_timezone()
        rows, total = job_values_page(
            account_id=api_key.account_id,
            status=status if status != "all" else None,
            model=model if model != "all" else None,
            limit=limit,
            offset=offset,
        )
        return LeanReply(
            {
                "jobs": [job_list_item_body(row, zone) for row in rows],
                "pagination": page_description(total=total, limit=limit, offset=offset),
            }
        )

    return read


def _predict_prepare(request: HttpRequest) -> Callable[[ApiKey], LeanReply] | None:
    """A plain JSON submission. `Prefer` (wait) and any other body go to the view."""
    if "HTTP_PREFER" in request.META or not json_body_plain(request):
        return None

    def submit(api_key: ApiKey) -> LeanReply:
        status, body, replayed = _predict_submit(
            request, api_key=api_key, data=json_body_parse(request)
        )
        return LeanReply(body, status, _replayed_headers(replayed))

    return submit


_bearer_key = BearerKeyLean()
job_detail_view = lean_view(
    JobDetailApi.as_view(), method="GET", authenticator=_bearer_key, prepare=_job_detail_prepare
)
job_list_view = lean_view(
    JobListApi.as_view(), method="GET", authenticator=_bearer_key, prepare=_job_list_prepare
)
predict_view = lean_view(
    PredictApi.as_view(), method="POST", authenticator=_bearer_key, prepare=_predict_prepare
)


class JobCancelApi(PhonosApiView):
    @extend_schema_serializer(component_name="JobCancelled")
    class OutputSerializer(serializers.Serializer[Any]):
        success = serializers.BooleanField()
        job_id = serializers.UUIDField()
        status = serializers.CharField()
        credits_refunded = serializers.IntegerField()
        message = serializers.CharField()

    @extend_schema(
        operation_id="cancel_job",
        description="Cancel a pending or running job and refund its credits.",
        parameters=[JOB_ID],
        request=None,
        responses={200: OutputSerializer, **error_responses(400, 404, 409)},
    )
    def post(self, request: ApiKeyRequest, job_id: str) -> Response:
        job = job_cancel(account=request.user, job_id=job_id)
        return Response(
            {
                "success": True,
                "job_id": str(job.id),
                "status": job.status,
                "credits_refunded": job.credits_refunded,
                "message": "Job cancelled successfully",
            }
        )


class JobDownloadApi(PhonosApiView):
    @extend_schema(
        operation_id="download_job_output",
        description="Download the output structure (PDB) of a completed job.",
        parameters=[JOB_ID],
        responses={
            (200, "chemical/x-pdb"): OpenApiResponse(OpenApiTypes.BINARY, "The output structure"),
            302: OpenApiResponse(description="Redirect to a short-lived presigned URL"),
            **error_responses(400, 404),
        },
    )
    def get(self, request: ApiKeyRequest, job_id: str) -> FileResponse | HttpResponseRedirect:
        job = job_get(account=request.user, job_id=job_id)
        if job.status != Job.Status.COMPLETED:
            raise InvalidInput(
                f"Job {job.id} is {job.status}; its output can be downloaded once it completed"
            )
        key = job_output_prefix(job=job) + job.output_file
        storage = get_storage()
        if settings.PHONOS_DOWNLOAD_MODE == "redirect":
            url = storage.presigned_url(key, job.output_file)
            if url:
                return HttpResponseRedirect(url)
        try:
            stream = storage.open(key)
        except FileNotFoundError:
            raise NotFound(f"The output of job {job.id} is no longer stored") from None
        return FileResponse(
            stream, as_attachment=True, filename=job.output_file, content_type="chemical/x-pdb"
        )
