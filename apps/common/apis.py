from typing import Protocol, runtime_checkable

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.common.exceptions import TooManyRequests
from apps.common.parsers import StorableJSONParser
from apps.common.ratelimit import rate_limit_hit


@runtime_checkable
class RateLimitedCredential(Protocol):
    """What `request.auth` carries when a request is rate-limited (accounts' `ApiKey`): common
    names the shape, so that it imports no domain app."""

    id: int
    rate_limit_per_minute: int


@runtime_checkable
class RevalidatingAuthenticator(Protocol):
    """An authenticator that may have answered from a cache (accounts' ApiKeyAuthentication)
    and checks it against the credentials version the rate limit read."""

    def revalidate(self, request: Request, credentials_version: int | None) -> None: ...


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="A short title, such as `Bad Request`")
    message = serializers.CharField(help_text="What went wrong, naming the offending field")


class TooManyRequestsSerializer(ErrorSerializer):
    reason = serializers.ChoiceField(
        choices=["rate_limit", "active_jobs", "queue_full", "stream_limit", "signup_limit"],
        help_text="Which limit was reached, as a stable word to branch on",
    )


ERROR_DESCRIPTIONS = {
    400: "Bad Request: invalid parameters",
    401: "Unauthorized: missing, malformed or revoked API key",
    402: "Insufficient credits for this job",
    404: "Not Found: no such resource for this account",
    409: "Conflict: the resource changed state meanwhile, or the Idempotency-Key was used "
    "with another body",
    413: "Payload Too Large: the request body is over the size limit",
    415: "Unsupported Media Type: the request body must be application/json",
    429: "Too Many Requests: the key's rate limit, the account's active-job cap or the "
    "queue's capacity was reached; see Retry-After",
    502: "Bad Gateway: the upstream service failed or could not be reached",
    503: "Model unavailable: no live worker serves this model now; see Retry-After",
    504: "Upstream timeout: the upstream service did not answer in time",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error envelope for 401 and 429, which every authenticated operation can answer,
    and for the other `statuses` that this operation can answer."""
    return {
        status: OpenApiResponse(
            TooManyRequestsSerializer if status == 429 else ErrorSerializer,
            description=ERROR_DESCRIPTIONS[status],
        )
        for status in sorted({401, 429, *statuses})
    }


class JsonFallbackNegotiation(DefaultContentNegotiation):
    """An Accept header that names nothing a view renders gets its first renderer (JSON), not
    a 406 that no operation documents: so `Accept: chemical/x-pdb` on a download still gets the
    file (a plain Django response, no renderer involved), and any error the JSON envelope."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


class PhonosApiView(APIView):
    """Every authenticated /v1 view: rate-limited per key, with RateLimit-* headers."""

    parser_classes = [StorableJSONParser]
    content_negotiation_class = JsonFallbackNegotiation

    def check_throttles(self, request: Request) -> None:
        api_key = request.auth
        if not isinstance(api_key, RateLimitedCredential):
            return
        decision = rate_limit_hit(key_id=api_key.id, limit=api_key.rate_limit_per_minute)
        request.rate_limit = decision
        # A cached key lookup is checked against the credentials version that came back with
        # the rate limit (apps.accounts.key_cache): a revoked key answers 401 here.
        authenticator = request.successful_authenticator
        if isinstance(authenticator, RevalidatingAuthenticator):
            authenticator.revalidate(request, decision.credentials_version)
        if not decision.allowed:
            raise TooManyRequests(
                f"You have exceeded the rate limit of {decision.limit} requests per minute",
                error="Rate limit exceeded",
                reason="rate_limit",
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
    content_negotiation_class = JsonFallbackNegotiation

    @extend_schema(
        operation_id="get_health",
        description="Check API health and status. This endpoint does not require authentication.",
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
