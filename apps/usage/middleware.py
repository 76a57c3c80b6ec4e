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
        usage = request_usage(request)
        response = self.get_response(request)
        if usage.api_key_id is not None and usage.account_id is not None:
            try:
                usage_record(
                    usage=usage,
                    endpoint=endpoint_name(request),
                    method=request.method or "",
                    status_code=response.status_code,
                    latency_ms=(time.perf_counter() - started) * 1000,
                )
            except Exception:
                logger.exception("Could not record usage for %s", request.path)
        return response
