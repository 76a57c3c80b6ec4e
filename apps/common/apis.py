import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.common.exception_handler import api_exception_handler
from apps.common.exceptions import TooManyRequests
from apps.common.parsers import StorableJSONParser
from apps.common.ratelimit import RateLimitDecision, rate_limit_hit


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


class ErrorSerializer(serializers.Serializer[Any]):
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

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        try:
            selected: tuple[BaseRenderer, str] = super().select_renderer(
                request, renderers, format_suffix
            )
            return selected
        except NotAcceptable:
            first = next(iter(renderers))
            return first, first.media_type


def _rate_limit_refusal(decision: RateLimitDecision) -> TooManyRequests | None:
    if decision.allowed:
        return None
    return TooManyRequests(
        f"You have exceeded the rate limit of {decision.limit} requests per minute",
        error="Rate limit exceeded",
        reason="rate_limit",
        retry_after=decision.reset_seconds,
    )


class PhonosApiView(APIView):
    """Every authenticated /v1 view: rate-limited per key, with RateLimit-* headers."""

    parser_classes = [StorableJSONParser]
    content_negotiation_class = JsonFallbackNegotiation

    def check_throttles(self, request: Request) -> None:
        api_key = request.auth
        if not isinstance(api_key, RateLimitedCredential):
            return
        decision = rate_limit_hit(key_id=api_key.id, limit=api_key.rate_limit_per_minute)
        # Our own attribute on DRF's request, read back by finalize_response.
        setattr(request, "rate_limit", decision)  # noqa: B010
        # A cached key lookup is checked against the credentials version that came back with
        # the rate limit (apps.accounts.key_cache): a revoked key answers 401 here.
        authenticator = request.successful_authenticator
        if isinstance(authenticator, RevalidatingAuthenticator):
            authenticator.revalidate(request, decision.credentials_version)
        if refusal := _rate_limit_refusal(decision):
            raise refusal

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        decision = getattr(request, "rate_limit", None)
        if decision is not None:
            for header, value in decision.headers().items():
                response[header] = value
        return response


# --- The lean answers ------------------------------------------------------------------------

_Credential = TypeVar("_Credential", bound=RateLimitedCredential)


class LeanAuthenticator(Protocol[_Credential]):
    """The bearer-key authentication without DRF (accounts' `BearerKeyLean`)."""

    def authenticate(self, request: HttpRequest) -> _Credential | None:
        """The request's credential, or None to leave the request to the DRF view."""

    def revalidate(
        self, request: HttpRequest, credential: _Credential, version: int | None
    ) -> _Credential:
        """The credential checked against the credentials version of the rate limit's round
        trip; raises AuthenticationFailed if it was revoked."""


@dataclass(slots=True)
class LeanReply:
    """What a lean endpoint answers for a credential: the data DRF's `Response` would carry,
    its status, and the headers of the view's own (those every PhonosApiView sets are added)."""

    body: Any
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    # The body already rendered (`json_render(body)`, or bytes kept from an earlier answer).
    rendered: bytes | None = None


@dataclass(frozen=True, slots=True)
class LeanPeek:
    """What `prepare` returns for an answer that may come from a Redis hash: `key` is read in
    the rate limit's round trip (`rate_limit_hit(peek=)`), and `reply(credential, peeked)` gets
    the hash as HGETALL returned it, or None where it could not be read (no Redis)."""

    key: str
    # Called with the credential that `authenticate` returned.
    reply: Callable[[Any, list[bytes] | None], LeanReply]


_json = JSONRenderer()


def json_render(body: Any) -> bytes:
    """A body's bytes as the lean answers and DRF's JSONRenderer write them."""
    rendered: bytes = _json.render(body)
    return rendered


def _allowed_methods(view_class: type[APIView]) -> str:
    """What DRF's `Allow` header says for this view (Django's View.setup adds HEAD to GET)."""
    methods = [
        method.upper()
        for method in view_class.http_method_names
        if hasattr(view_class, method) or (method == "head" and hasattr(view_class, "get"))
    ]
    return ", ".join(methods)


def lean_view(
    view: Callable[..., HttpResponseBase],
    *,
    method: str,
    authenticator: LeanAuthenticator[_Credential],
    prepare: Callable[..., Callable[[_Credential], LeanReply] | LeanPeek | None],
) -> Callable[..., HttpResponseBase]:
    """A PhonosApiView's `method` answered without DRF's dispatch, for the hot path: the reads
    that clients poll and the submission.

    `prepare(request, **kwargs)` judges what it can before the key (the query, the headers, the
    content type) and returns the function that answers for a credential, or None to decline:
    a request that only the view can judge (and answer in its own words). A request that
    `prepare` declines, any other method, an `Accept` asking DRF to indent, and a request
    without a good key (the authenticator answers None) go to `view` itself, which answers as
    usual. `prepare` may instead return a `LeanPeek`, whose hash that round trip also reads.
    Otherwise: the same rate limit (one Redis round trip), the credential revalidated
    against the credentials version it returned, the reply rendered as DRF renders it, with the
    headers DRF's view sets (`Allow`, `RateLimit-*`); an error raised on the way (by the
    answering function too, which reads a request body only then, as the view would) is
    answered by the API's exception handler, as in the view. The OpenAPI document still
    describes `view` (its `cls` is kept).

    The endpoint's `lean_answer(request, **kwargs)` is that answer alone (None where it
    declines): apps.common.middleware.LeanApiMiddleware calls it before the dashboard's
    middleware, which a bearer-key request does not need."""
    view_class: type[APIView] = getattr(view, "cls")  # noqa: B009 - set by APIView.as_view
    allow = _allowed_methods(view_class)

    def answer(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | None:
        # `Accept: application/json; indent=4` makes DRF's renderer indent: the view's to do.
        plain = request.method == method and "indent" not in request.META.get("HTTP_ACCEPT", "")
        reply_for = prepare(request, **kwargs) if plain else None
        credential = authenticator.authenticate(request) if reply_for is not None else None
        if reply_for is None or credential is None:
            return None
        decision = rate_limit_hit(
            key_id=credential.id,
            limit=credential.rate_limit_per_minute,
            peek=reply_for.key if isinstance(reply_for, LeanPeek) else None,
        )
        headers = decision.headers()
        rendered = None
        try:
            credential = authenticator.revalidate(request, credential, decision.credentials_version)
            if refusal := _rate_limit_refusal(decision):
                raise refusal
            if isinstance(reply_for, LeanPeek):
                reply = reply_for.reply(credential, decision.peeked)
            else:
                reply = reply_for(credential)
            body, status, rendered = reply.body, reply.status, reply.rendered
            headers |= reply.headers
        except Exception as error:
            handled = api_exception_handler(error, {})
            body, status = handled.data, handled.status_code
            headers |= {name: value for name, value in handled.items() if name != "Content-Type"}
        if rendered is None:
            rendered = json_render(body)
        response = HttpResponse(rendered, status=status, content_type="application/json")
        response["Allow"] = allow
        for name, value in headers.items():
            response[name] = value
        return response

    @functools.wraps(view)
    def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = answer(request, *args, **kwargs)
        return view(request, *args, **kwargs) if response is None else response

    endpoint.lean_answer = answer  # type: ignore[attr-defined]
    return csrf_exempt(endpoint)


class HealthApi(APIView):
    authentication_classes: list[type[BaseAuthentication]] = []
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
