from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response

from apps.accounts.api_request import ApiKeyRequest
from apps.common.apis import PhonosApiView, error_responses
from apps.jobs.selectors import job_counts


class AccountApi(PhonosApiView):
    @extend_schema_serializer(component_name="AccountOverview")
    class OutputSerializer(serializers.Serializer[Any]):
        class AccountSerializer(serializers.Serializer[Any]):
            id = serializers.IntegerField()
            username = serializers.CharField()
            email = serializers.CharField()
            created_at = serializers.DateTimeField()

        class CreditsSerializer(serializers.Serializer[Any]):
            balance = serializers.IntegerField()
            currency = serializers.CharField()

        @extend_schema_serializer(component_name="JobCounts")
        class JobsSerializer(serializers.Serializer[Any]):
            total = serializers.IntegerField()
            completed = serializers.IntegerField()
            active = serializers.IntegerField()
            failed = serializers.IntegerField()
            cancelled = serializers.IntegerField()

        @extend_schema_serializer(component_name="ApiKeyInfo")
        class KeySerializer(serializers.Serializer[Any]):
            prefix = serializers.CharField()
            name = serializers.CharField()
            rate_limit_per_minute = serializers.IntegerField()

        account = AccountSerializer()
        credits = CreditsSerializer()
        jobs = JobsSerializer()
        api_key = KeySerializer()

    @extend_schema(
        operation_id="get_account",
        description="Your account, credit balance, job counts and the key in use.",
        responses={200: OutputSerializer, **error_responses()},
    )
    def get(self, request: ApiKeyRequest) -> Response:
        account = request.user
        account.refresh_from_db(fields=["credit_balance"])
        data = {
            "account": account,
            "credits": {"balance": account.credit_balance, "currency": "credits"},
            "jobs": job_counts(account=account),
            "api_key": request.auth,
        }
        return Response(self.OutputSerializer(data).data)
