"""Results of completed jobs (summary, confidences, ZIP, PDB/mmCIF) and the live event stream."""

import json
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from apps.accounts.api_request import ApiKeyRequest
from apps.accounts.models import Account
from apps.common.apis import PhonosApiView, error_responses
from apps.common.exceptions import InvalidInput, NotFound
from apps.jobs.models import Job
from apps.jobs.selectors import job_get, job_output_prefix, job_output_read
from apps.jobs.storage import get_storage
from apps.jobs.streams import job_event_response

CONFIDENCE_FILE = "confidence.json"


def completed_job(*, account: Account, job_id: str) -> Job:
    job = job_get(account=account, job_id=job_id)
    if job.status != Job.Status.COMPLETED:
        raise InvalidInput(f"Job {job.id} is {job.status}; results exist once it completed")
    return job


class JobResultsApi(PhonosApiView):
    @extend_schema_serializer(component_name="JobResults")
    class OutputSerializer(serializers.Serializer[Any]):
        job_id = serializers.UUIDField()
        model = serializers.CharField()
        summary = serializers.DictField()
        untrained = serializers.BooleanField()
        files = serializers.ListField(child=serializers.CharField())

    @extend_schema(
        operation_id="job_results",
        responses={200: OutputSerializer, **error_responses(400, 404)},
    )
    def get(self, request: ApiKeyRequest, job_id: str) -> Response:
        job = completed_job(account=request.user, job_id=job_id)
        return Response(
            {
                "job_id": str(job.id),
                "model": job.model,
                "summary": job.result_summary or {},
                "untrained": bool(job.metadata.get("untrained")),
                "files": job.metadata.get("files", [job.output_file]),
            }
        )


class JobConfidenceApi(PhonosApiView):
    @extend_schema(
        operation_id="job_results_confidence",
        responses={200: OpenApiTypes.OBJECT, **error_responses(400, 404)},
    )
    def get(self, request: ApiKeyRequest, job_id: str) -> Response:
        job = completed_job(account=request.user, job_id=job_id)
        return Response(json.loads(job_output_read(job=job, name=CONFIDENCE_FILE)))


class JobArchiveApi(PhonosApiView):
    @extend_schema(
        operation_id="job_results_archive",
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, "Every output file"),
            **error_responses(400, 404),
        },
    )
    def get(self, request: ApiKeyRequest, job_id: str) -> FileResponse:
        job = completed_job(account=request.user, job_id=job_id)
        storage = get_storage()
        prefix = job_output_prefix(job=job)
        keys = storage.list(prefix)
        if not keys:
            raise NotFound(f"Job {job.id} has no stored outputs")
        # Spooled: small archives stay in memory, large ones go to disk, never all in RAM.
        archive = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            for key in keys:
                with (
                    storage.open(key) as stream,
                    bundle.open(f"{job.id}/{key[len(prefix) :]}", "w") as member,
                ):
                    while chunk := stream.read(1024 * 1024):
                        member.write(chunk)
        archive.seek(0)
        return FileResponse(
            archive, as_attachment=True, filename=f"{job.id}.zip", content_type="application/zip"
        )


class JobStructureApi(PhonosApiView):
    FORMAT = OpenApiParameter("format", OpenApiTypes.STR, enum=["pdb", "cif"], default="pdb")

    @extend_schema(
        operation_id="job_results_structure",
        parameters=[FORMAT],
        responses={
            (200, "chemical/x-pdb"): OpenApiResponse(OpenApiTypes.BINARY),
            (200, "chemical/x-mmcif"): OpenApiResponse(OpenApiTypes.BINARY),
            **error_responses(400, 404),
        },
    )
    def get(self, request: ApiKeyRequest, job_id: str) -> HttpResponse:
        wanted = request.query_params.get("format", "pdb")
        if wanted not in {"pdb", "cif"}:
            raise InvalidInput("format must be pdb or cif")
        job = completed_job(account=request.user, job_id=job_id)
        pdb_text = job_output_read(job=job, name=job.output_file).decode()
        stem = job.output_file.rsplit(".", 1)[0]
        if wanted == "pdb":
            body, content_type = pdb_text, "chemical/x-pdb"
        else:
            import gemmi

            structure = gemmi.read_pdb_string(pdb_text)
            structure.name = stem
            structure.setup_entities()
            body, content_type = structure.make_mmcif_document().as_string(), "chemical/x-mmcif"
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{stem}.{wanted}"'
        return response


class EventStreamRenderer(BaseRenderer):
    """Lets clients send `Accept: text/event-stream`; errors still carry the JSON envelope."""

    media_type = "text/event-stream"
    format = "sse"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return json.dumps(data).encode()


class JobEventsApi(PhonosApiView):
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="job_events",
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                # The schema of each event in the stream, as SSE clients parse it.
                inline_serializer(
                    "JobStreamEvent",
                    {
                        "event": serializers.ChoiceField(
                            choices=["stage", "completed", "failed", "cancelled", "timeout"]
                        ),
                        "data": serializers.CharField(
                            help_text="JSON: job_id, status, stage, progress, at; and error "
                            "or download_url once the job failed or completed"
                        ),
                        "id": serializers.CharField(
                            required=False, help_text="Send it back as Last-Event-ID to resume"
                        ),
                        "retry": serializers.IntegerField(required=False),
                    },
                ),
                "`stage` events, then one of `completed`, `failed`, `cancelled`",
            ),
            **error_responses(404),
        },
    )
    def get(self, request: ApiKeyRequest, job_id: str) -> StreamingHttpResponse:
        job = job_get(account=request.user, job_id=job_id)
        return job_event_response(
            request=request._request,
            job=job,
            account_id=request.user.id,
            last_event_id=request.headers.get("Last-Event-ID"),
        )
