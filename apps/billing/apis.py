from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.api_request import ApiKeyRequest
from apps.billing.models import LedgerEntry
from apps.billing.selectors import checkout_session_get, credit_pack_list, ledger_entry_query
from apps.billing.services import checkout_session_create, stripe_webhook_handle
from apps.billing.stripe_client import stripe_payments_enabled
from apps.common.apis import ErrorSerializer, PhonosApiView, error_responses
from apps.common.pagination import PageQuerySerializer, PaginationSerializer, paginate

PAYMENT_ERRORS = {
    403: OpenApiResponse(ErrorSerializer, description="Buying credits is not enabled here"),
    502: OpenApiResponse(ErrorSerializer, description="Stripe could not open a checkout session"),
}


class CreditPackSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    credits = serializers.IntegerField()
    price_cents = serializers.IntegerField(help_text="Price in the currency's smallest unit")
    currency = serializers.CharField()


class CreditPackListApi(PhonosApiView):
    @extend_schema_serializer(component_name="CreditPackList")
    class OutputSerializer(serializers.Serializer[Any]):
        purchases_enabled = serializers.BooleanField(
            help_text="False where this deployment has no Stripe account configured"
        )
        packs = CreditPackSerializer(many=True)

    @extend_schema(
        operation_id="list_credit_packs",
        description="The credit packs on sale through Stripe Checkout.",
        responses={200: OutputSerializer, **error_responses()},
    )
    def get(self, request: Request) -> Response:
        packs = [
            {**pack.__dict__, "currency": settings.PHONOS_CURRENCY} for pack in credit_pack_list()
        ]
        return Response({"purchases_enabled": stripe_payments_enabled(), "packs": packs})


class CheckoutApi(PhonosApiView):
    class InputSerializer(serializers.Serializer[Any]):
        pack = serializers.CharField(max_length=32, help_text="A pack id from /v1/billing/packs")

    @extend_schema_serializer(component_name="CheckoutCreated")
    class OutputSerializer(serializers.Serializer[Any]):
        checkout_url = serializers.CharField(help_text="Send the buyer here to pay on Stripe")
        session_id = serializers.CharField(help_text="The Stripe Checkout Session id")

    @extend_schema(
        operation_id="create_checkout",
        description="Open a Stripe Checkout Session for a credit pack. The credits arrive when "
        "Stripe reports the payment (usually seconds after the buyer pays).",
        request=InputSerializer,
        responses={201: OutputSerializer, **error_responses(400), **PAYMENT_ERRORS},
    )
    def post(self, request: ApiKeyRequest) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        session_id, url = checkout_session_create(
            account=request.user,
            pack_id=serializer.validated_data["pack"],
            success_url=settings.PHONOS_CHECKOUT_SUCCESS_URL,
            cancel_url=settings.PHONOS_CHECKOUT_CANCEL_URL,
        )
        return Response({"checkout_url": url, "session_id": session_id}, status.HTTP_201_CREATED)


class CheckoutDetailApi(PhonosApiView):
    @extend_schema_serializer(component_name="Checkout")
    class OutputSerializer(serializers.Serializer[Any]):
        session_id = serializers.CharField(source="stripe_session_id")
        pack = serializers.CharField(source="pack_id")
        credits = serializers.IntegerField()
        amount_cents = serializers.IntegerField()
        currency = serializers.CharField()
        # A plain string in the schema: a second `status` enum would collide with the webhooks'.
        status = serializers.CharField(
            help_text="`open` (awaiting the buyer), `awaiting_payment` (a delayed payment method), "
            "`completed` (credits added), `expired` or `failed`"
        )
        created_at = serializers.DateTimeField()
        completed_at = serializers.DateTimeField(allow_null=True)

    @extend_schema(
        operation_id="get_checkout",
        description="A checkout you opened: `completed` once its credits were added.",
        parameters=[
            OpenApiParameter("session_id", OpenApiTypes.STR, OpenApiParameter.PATH),
        ],
        responses={200: OutputSerializer, **error_responses(404)},
    )
    def get(self, request: ApiKeyRequest, session_id: str) -> Response:
        checkout = checkout_session_get(account=request.user, stripe_session_id=session_id)
        return Response(self.OutputSerializer(checkout).data)


class LedgerEntrySerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=LedgerEntry.Kind.choices)
    amount = serializers.IntegerField(help_text="Signed: positive adds credits, negative spends")
    balance_after = serializers.IntegerField()
    job_id = serializers.UUIDField(allow_null=True)
    reference = serializers.CharField(help_text="For purchases, the Stripe Checkout Session id")
    description = serializers.CharField()
    created_at = serializers.DateTimeField()


class LedgerApi(PhonosApiView):
    @extend_schema_serializer(component_name="Ledger")
    class OutputSerializer(serializers.Serializer[Any]):
        entries = LedgerEntrySerializer(many=True)
        pagination = PaginationSerializer()

    class FilterSerializer(PageQuerySerializer):
        kind = serializers.ChoiceField(choices=LedgerEntry.Kind.choices, required=False)

    @extend_schema(
        operation_id="list_ledger_entries",
        description="Every change of your credit balance, newest first.",
        parameters=[FilterSerializer],
        responses={200: OutputSerializer, **error_responses(400)},
    )
    def get(self, request: ApiKeyRequest) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        entries = ledger_entry_query(account=request.user, kind=params.get("kind"))
        page, pagination = paginate(entries, limit=params["limit"], offset=params["offset"])
        return Response(
            {"entries": LedgerEntrySerializer(page, many=True).data, "pagination": pagination}
        )


class StripeWebhookApi(APIView):
    """Stripe's deliveries: authenticated by the Stripe-Signature header, not by an API key."""

    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]

    @extend_schema(exclude=True)
    def post(self, request: Request) -> Response:
        # The signature covers the exact bytes, so the body is read raw, never parsed first.
        outcome = stripe_webhook_handle(
            payload=request.body, signature=request.headers.get("Stripe-Signature", "")
        )
        return Response({"received": True, "outcome": outcome})
