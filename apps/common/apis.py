from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import ApiKey
from apps.accounts.ratelimit import rate_limit_hit
from apps.common.exceptions import TooManyRequests


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    message = serializers.CharField()


ERRORS = {status: ErrorSerializer for status in (400, 401, 404, 405, 413, 429)}


def error_responses(*statuses: int) -> dict[int, type[ErrorSerializer]]:
    return {**ERRORS, **{status: ErrorSerializer for status in statuses}}


class PhonosApiView(APIView):
    """Every authenticated /v1 view: rate-limited per key, with RateLimit-* headers."""

    def check_throttles(self, request: Request) -> None:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return
        decision = rate_limit_hit(key_id=api_key.id, limit=api_key.rate_limit_per_minute)
        request.rate_limit = decision
        if not decision.allowed:
            raise TooManyRequests(
                f"You have exceeded the rate limit of {decision.limit} requests per minute",
                error="Rate limit exceeded",
                retry_after=decision.reset_seconds,
            )

    def finalize_response(self, request: Request, response: Response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        decision = getattr(request, "rate_limit", None)
        if decision is not None:
            for header, value in decision.headers().items():
                response[header] = value
        return response


class HealthApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        auth=[],
        responses=inline_serializer(
            "Health",
            {
                "status": serializers.CharField(),
                "version": serializers.CharField(),
                "message": serializers.CharField(),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "status": "operational",
                "version": settings.PHONOS_VERSION,
                "message": "PHONOS API is running",
            }
        )
