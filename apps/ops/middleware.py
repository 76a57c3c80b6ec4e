"""The first middleware every request meets: it binds the request id to the log context,
returns it in `X-Request-ID`, writes one access log line and counts the request in the metrics."""

import logging
import re
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.common.metrics import http_request_observe
from apps.common.request_context import (
    REQUEST_ID_HEADER,
    log_context_bind,
    log_context_reset,
    request_id_clean,
)

logger = logging.getLogger("phonos.request")

UNMATCHED_ENDPOINT = "unmatched"
_ROUTE_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")


def endpoint_route(request: HttpRequest) -> str:
    """The URL pattern (`/v1/jobs/{job_id}`), never the path: the path would give every job
    id its own time series. Paths that match no route share one label."""
    match = request.resolver_match
    if match is None or not match.route:
        return UNMATCHED_ENDPOINT
    return "/" + _ROUTE_PARAMETER.sub(r"{\1}", match.route)


class RequestObservabilityMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        request_id = request_id_clean(request.headers.get(REQUEST_ID_HEADER))
        token = log_context_bind(request_id=request_id)
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            seconds = time.perf_counter() - started
            endpoint = endpoint_route(request)
            logger.info(
                "%s %s %s",
                request.method,
                endpoint,
                response.status_code,
                extra={
                    "method": request.method,
                    "endpoint": endpoint,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
            http_request_observe(endpoint=endpoint, status=response.status_code, seconds=seconds)
            return response
        finally:
            log_context_reset(token)
