import logging
import re
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.common.request_usage import request_usage
from apps.usage.services import usage_record

logger = logging.getLogger(__name__)

_ROUTE_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")


def endpoint_name(request: HttpRequest) -> str:
    """`/v1/jobs/{job_id}` rather than the concrete path, so usage groups by endpoint."""
    match = request.resolver_match
    if match is None or not match.route:
        return request.path[:120]
    return "/" + _ROUTE_PARAMETER.sub(r"{\1}", match.route)


class UsageRecordingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        request_usage_record(request, status_code=response.status_code, started=started)
        return response


def request_usage_record(request: HttpRequest, *, status_code: int, started: float) -> None:
    """Record what an authenticated request used, once: a request already recorded (the event
    stream records its own) or without a key is skipped. Never raises: usage must not fail a
    request that has already been answered."""
    usage = request_usage(request)
    if usage.api_key_id is None or usage.account_id is None:
        return
    try:
        usage_record(
            usage=usage,
            endpoint=endpoint_name(request),
            method=request.method or "",
            status_code=status_code,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    except Exception:
        logger.exception("Could not record usage for %s", request.path)
    usage.api_key_id = None
