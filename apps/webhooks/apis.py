from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from apps.accounts.api_request import ApiKeyRequest
from apps.common.apis import ErrorSerializer, PhonosApiView, error_responses
from apps.common.pagination import PageQuerySerializer, PaginationSerializer, paginate
from apps.jobs.selectors import job_get
from apps.webhooks.models import Webhook, WebhookDelivery
from apps.webhooks.selectors import (
    account_webhook_secret_get,
    request_webhook_delivery_list,
    webhook_delivery_list,
    webhook_get,
    webhook_list,
)
from apps.webhooks.services import (
    ROTATION_GRACE_MAX_HOURS,
    AccountSecretShown,
    WebhookWithSecret,
    account_webhook_secret_rotate,
    request_webhook_delivery_retry,
    webhook_create,
    webhook_delete,
    webhook_delivery_retry,
    webhook_secret_rotate,
    webhook_test_send,
)

WEBHOOK_ID = OpenApiParameter(
    "webhook_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="Webhook ID returned when the webhook was created",
    examples=[OpenApiExample("A webhook", value="7d0f6a2e-3c1b-4a8e-9a51-2f1f0b6f4c11")],
)
DELIVERY_ID = OpenApiParameter(
    "delivery_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="Delivery ID from the deliveries list; receivers saw it as `webhook-id`",
)


def _errors(*statuses: int) -> dict[int, OpenApiResponse]:
    responses = error_responses(*statuses)
    if 404 in responses:
        responses[404] = OpenApiResponse(
            ErrorSerializer, description="Not Found: no such webhook or delivery for this account"
        )
    if 409 in responses:
        responses[409] = OpenApiResponse(
            ErrorSerializer, description="Conflict: the delivery is being attempted right now"
        )
    return responses


class WebhookSerializer(serializers.Serializer[Any]):
    webhook_id = serializers.UUIDField(source="id")
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=Webhook.Event.values))
    enabled = serializers.BooleanField(
        source="is_enabled",
        help_text="False once deliveries failed for days; a successful test enables it again",
    )
    failing_since = serializers.DateTimeField(
        allow_null=True, help_text="When deliveries started failing; null after any success"
    )
    disabled_at = serializers.DateTimeField(allow_null=True)
    disabled_reason = serializers.CharField(allow_blank=True)
    secret_hint = serializers.CharField(help_text="The start of the signing secret")
    created_at = serializers.DateTimeField()


class WebhookListSerializer(serializers.Serializer[Any]):
    webhooks = WebhookSerializer(many=True)


class WebhookCreateSerializer(serializers.Serializer[Any]):
    url = serializers.CharField(max_length=2048, help_text="HTTPS URL to receive webhook events")
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=Webhook.Event.values),
        required=False,
        allow_empty=False,
        help_text="Events to subscribe to; by default job.completed and job.failed",
    )


class WebhookWithSecretSerializer(WebhookSerializer):
    secret = serializers.CharField(
        help_text="The signing secret (`whsec_...`), shown only in this response: store it"
    )
    message = serializers.CharField()


class WebhookSecretRotateSerializer(serializers.Serializer[Any]):
    previous_secret_valid_hours = serializers.IntegerField(
        min_value=0,
        max_value=ROTATION_GRACE_MAX_HOURS,
        default=24,
        help_text="How long the old secret keeps signing next to the new one; 0 retires it now",
    )


class WebhookDeletedSerializer(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    webhook_id = serializers.UUIDField()
    status = serializers.CharField()
    message = serializers.CharField()


class WebhookDeliveryQueuedSerializer(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    webhook_id = serializers.UUIDField(
        allow_null=True, help_text="null for a delivery to a job's own webhook_url"
    )
    delivery_id = serializers.UUIDField()
    event = serializers.CharField()
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.values)
    message = serializers.CharField()


class WebhookAttemptSerializer(serializers.Serializer[Any]):
    attempt = serializers.IntegerField(source="number")
    attempted_at = serializers.DateTimeField()
    succeeded = serializers.BooleanField()
    status_code = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    response = serializers.CharField(
        source="response_body", allow_blank=True, help_text="The start of the receiver's answer"
    )
    next_retry_at = serializers.DateTimeField(allow_null=True)


class WebhookDeliverySerializer(serializers.Serializer[Any]):
    delivery_id = serializers.UUIDField(source="id")
    event = serializers.CharField()
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.values)
    attempt_count = serializers.IntegerField()
    next_retry_at = serializers.DateTimeField(source="next_attempt_at", allow_null=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    attempts = WebhookAttemptSerializer(many=True)


class WebhookDeliveryListSerializer(serializers.Serializer[Any]):
    deliveries = WebhookDeliverySerializer(many=True)
    pagination = PaginationSerializer()


class WebhookDeliveryFilterSerializer(PageQuerySerializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20)


def _delivery_page(request: ApiKeyRequest, deliveries: QuerySet[WebhookDelivery]) -> dict[str, Any]:
    """The page of `deliveries` that the query's limit and offset ask for, and its pagination."""
    filters = WebhookDeliveryFilterSerializer(data=request.query_params)
    filters.is_valid(raise_exception=True)
    page, pagination = paginate(
        deliveries, limit=filters.validated_data["limit"], offset=filters.validated_data["offset"]
    )
    return {"deliveries": WebhookDeliverySerializer(page, many=True).data, "pagination": pagination}


def _with_secret(created: WebhookWithSecret, message: str) -> dict[str, Any]:
    return {
        **WebhookSerializer(created.webhook).data,
        "secret": created.secret,
        "message": message,
    }


def _queued(delivery: WebhookDelivery, message: str) -> dict[str, Any]:
    return {
        "success": True,
        "webhook_id": str(delivery.webhook_id) if delivery.webhook_id else None,
        "delivery_id": str(delivery.id),
        "event": delivery.event,
        "status": delivery.status,
        "message": message,
    }


class WebhookListApi(PhonosApiView):
    @extend_schema(
        operation_id="list_webhooks", responses={200: WebhookListSerializer, **_errors()}
    )
    def get(self, request: ApiKeyRequest) -> Response:
        webhooks = webhook_list(account=request.user)
        return Response({"webhooks": WebhookSerializer(webhooks, many=True).data})

    @extend_schema(
        operation_id="create_webhook",
        request=WebhookCreateSerializer,
        responses={201: WebhookWithSecretSerializer, **_errors(400)},
    )
    def post(self, request: ApiKeyRequest) -> Response:
        data = WebhookCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        created = webhook_create(
            account=request.user,
            url=data.validated_data["url"],
            events=data.validated_data.get("events"),
        )
        message = "Webhook created; store its secret now, it is not shown again"
        return Response(_with_secret(created, message), status=201)


class WebhookDetailApi(PhonosApiView):
    @extend_schema(
        operation_id="get_webhook",
        parameters=[WEBHOOK_ID],
        responses={200: WebhookSerializer, **_errors(404)},
    )
    def get(self, request: ApiKeyRequest, webhook_id: str) -> Response:
        webhook = webhook_get(account=request.user, webhook_id=webhook_id)
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(
        operation_id="delete_webhook",
        parameters=[WEBHOOK_ID],
        responses={200: WebhookDeletedSerializer, **_errors(404)},
    )
    def delete(self, request: ApiKeyRequest, webhook_id: str) -> Response:
        webhook = webhook_delete(account=request.user, webhook_id=webhook_id)
        return Response(
            {
                "success": True,
                "webhook_id": str(webhook.id),
                "status": "deleted",
                "message": "Webhook deleted successfully",
            }
        )


class WebhookTestApi(PhonosApiView):
    @extend_schema(
        operation_id="test_webhook",
        parameters=[WEBHOOK_ID],
        request=None,
        responses={200: WebhookDeliveryQueuedSerializer, **_errors(404)},
    )
    def post(self, request: ApiKeyRequest, webhook_id: str) -> Response:
        delivery = webhook_test_send(account=request.user, webhook_id=webhook_id)
        return Response(_queued(delivery, "Test event queued for delivery"))


class WebhookSecretRotateApi(PhonosApiView):
    @extend_schema(
        operation_id="rotate_webhook_secret",
        parameters=[WEBHOOK_ID],
        request=WebhookSecretRotateSerializer,
        responses={200: WebhookWithSecretSerializer, **_errors(400, 404)},
    )
    def post(self, request: ApiKeyRequest, webhook_id: str) -> Response:
        data = WebhookSecretRotateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        rotated = webhook_secret_rotate(
            account=request.user,
            webhook_id=webhook_id,
            previous_valid_hours=data.validated_data["previous_secret_valid_hours"],
        )
        message = "Secret rotated; store the new one now, it is not shown again"
        return Response(_with_secret(rotated, message))


class WebhookDeliveryListApi(PhonosApiView):
    @extend_schema(
        operation_id="list_webhook_deliveries",
        parameters=[WEBHOOK_ID, WebhookDeliveryFilterSerializer],
        responses={200: WebhookDeliveryListSerializer, **_errors(400, 404)},
    )
    def get(self, request: ApiKeyRequest, webhook_id: str) -> Response:
        webhook = webhook_get(account=request.user, webhook_id=webhook_id)
        return Response(_delivery_page(request, webhook_delivery_list(webhook=webhook)))


class WebhookDeliveryRetryApi(PhonosApiView):
    @extend_schema(
        operation_id="retry_webhook_delivery",
        parameters=[WEBHOOK_ID, DELIVERY_ID],
        request=None,
        responses={200: WebhookDeliveryQueuedSerializer, **_errors(404, 409)},
    )
    def post(self, request: ApiKeyRequest, webhook_id: str, delivery_id: str) -> Response:
        delivery = webhook_delivery_retry(
            account=request.user, webhook_id=webhook_id, delivery_id=delivery_id
        )
        return Response(_queued(delivery, "Delivery queued for another attempt"))


class AccountSecretSerializer(serializers.Serializer[Any]):
    secret_hint = serializers.CharField(help_text="The start of the account's signing secret")
    previous_secret_expires_at = serializers.DateTimeField(
        allow_null=True,
        help_text="Until when the replaced secret also signs; null when only one signs",
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class AccountSecretShownSerializer(AccountSecretSerializer):
    secret = serializers.CharField(
        help_text="The account's signing secret (`whsec_...`), shown only in this response"
    )
    message = serializers.CharField()


class AccountSecretApi(PhonosApiView):
    """The secret that signs every job's own `webhook_url` deliveries (account webhooks keep
    their own secrets)."""

    @extend_schema(
        operation_id="get_account_webhook_secret",
        description="The account's webhook secret as a hint, never the secret; 404 before the "
        "account has one.",
        responses={200: AccountSecretSerializer, **error_responses(404)},
    )
    def get(self, request: ApiKeyRequest) -> Response:
        return Response(
            AccountSecretSerializer(account_webhook_secret_get(account=request.user)).data
        )

    @extend_schema(
        operation_id="rotate_account_webhook_secret",
        description="Create the account's webhook secret (201) or replace it (200), and show it "
        "this once. The replaced secret keeps signing next to the new one for "
        "`previous_secret_valid_hours`.",
        request=WebhookSecretRotateSerializer,
        responses={
            200: AccountSecretShownSerializer,
            201: AccountSecretShownSerializer,
            **error_responses(400),
        },
    )
    def post(self, request: ApiKeyRequest) -> Response:
        data = WebhookSecretRotateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        shown: AccountSecretShown = account_webhook_secret_rotate(
            account=request.user,
            previous_valid_hours=data.validated_data["previous_secret_valid_hours"],
        )
        verb = "created" if shown.created else "rotated"
        return Response(
            {
                **AccountSecretSerializer(shown.account_secret).data,
                "secret": shown.secret,
                "message": f"Account webhook secret {verb}; store it now, it is not shown again",
            },
            status=201 if shown.created else 200,
        )


# --- A job's own webhook (`webhook_url` on its submission) ---

JOB_ID = OpenApiParameter(
    "job_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Job ID from /v1/predict"
)


class RequestWebhookDeliveryListSerializer(serializers.Serializer[Any]):
    webhook_url = serializers.CharField(allow_null=True, help_text="The job's own webhook")
    webhook_events = serializers.ListField(child=serializers.CharField())
    deliveries = WebhookDeliverySerializer(many=True)
    pagination = PaginationSerializer()


class JobWebhookDeliveryListApi(PhonosApiView):
    @extend_schema(
        operation_id="list_job_webhook_deliveries",
        description="The deliveries to the job's own `webhook_url`, newest first, each with "
        "every attempt. Another tenant's job answers 404.",
        parameters=[JOB_ID, WebhookDeliveryFilterSerializer],
        responses={200: RequestWebhookDeliveryListSerializer, **_errors(400, 404)},
    )
    def get(self, request: ApiKeyRequest, job_id: str) -> Response:
        job = job_get(account=request.user, job_id=job_id)
        deliveries = request_webhook_delivery_list(account=request.user, job_id=job.id)
        return Response(
            {
                "webhook_url": job.webhook_url or None,
                "webhook_events": job.webhook_events,
                **_delivery_page(request, deliveries),
            }
        )


class JobWebhookDeliveryRetryApi(PhonosApiView):
    @extend_schema(
        operation_id="retry_job_webhook_delivery",
        description="Attempt a delivery to the job's own `webhook_url` now, as "
        "`POST /v1/webhooks/{id}/deliveries/{delivery_id}/retry` does for a webhook.",
        parameters=[JOB_ID, DELIVERY_ID],
        request=None,
        responses={200: WebhookDeliveryQueuedSerializer, **_errors(404, 409)},
    )
    def post(self, request: ApiKeyRequest, job_id: str, delivery_id: str) -> Response:
        job = job_get(account=request.user, job_id=job_id)
        delivery = request_webhook_delivery_retry(
            account=request.user, job_id=job.id, delivery_id=delivery_id
        )
        return Response(_queued(delivery, "Delivery queued for another attempt"))
