from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from apps.accounts.api_request import ApiKeyRequest
from apps.common.apis import PhonosApiView, error_responses
from apps.usage.services import usage_report


def _rows(
    name: str, key: str, key_field: serializers.Field[Any, Any, Any, Any]
) -> serializers.BaseSerializer[Any]:
    # `many=True`: a ListSerializer at run time, which drf-spectacular types as its Serializer.
    return inline_serializer(
        name,
        {
            key: key_field,
            "requests": serializers.IntegerField(),
            "credits_used": serializers.IntegerField(),
        },
        many=True,
    )


class UsageApi(PhonosApiView):
    class FilterSerializer(serializers.Serializer[Any]):
        days = serializers.IntegerField(min_value=1, max_value=90, default=30)

    @extend_schema_serializer(component_name="Usage")
    class OutputSerializer(serializers.Serializer[Any]):
        period = inline_serializer(
            "UsagePeriod",
            {
                "days": serializers.IntegerField(),
                "start_date": serializers.DateField(),
                "end_date": serializers.DateField(),
            },
        )
        totals = inline_serializer(
            "UsageTotals",
            {
                "requests": serializers.IntegerField(),
                "credits_used": serializers.IntegerField(),
                "credits_refunded": serializers.IntegerField(),
                "avg_response_time_ms": serializers.FloatField(),
            },
        )
        by_endpoint = _rows("UsageByEndpoint", "endpoint", serializers.CharField())
        by_model = _rows("UsageByModel", "model", serializers.CharField())
        daily = _rows("UsageDaily", "date", serializers.DateField())

    @extend_schema(
        operation_id="get_usage",
        description="Requests and credits over the last `days` days, by endpoint, model and day.",
        parameters=[FilterSerializer],
        responses={200: OutputSerializer, **error_responses(400)},
    )
    def get(self, request: ApiKeyRequest) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return Response(usage_report(account=request.user, days=filters.validated_data["days"]))
