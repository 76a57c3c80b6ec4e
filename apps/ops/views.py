"""Operator endpoints: liveness, readiness and metrics. Plain Django views: no authentication
classes, no rate limit, no usage record (usage is written only for API-key requests)."""

import hmac
import logging
from collections.abc import Callable
from functools import wraps

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from apps.common.exception_handler import error_body
from apps.ops.health import readiness_check
from apps.ops.metrics import metrics_render

logger = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _get_only(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """405 in the error envelope, like every other refusal. No cookie is read here, so CSRF has
    nothing to protect (and its HTML 403 would not be the envelope)."""

    @csrf_exempt
    @wraps(view)
    def wrapped(request: HttpRequest) -> HttpResponse:
        if request.method not in {"GET", "HEAD"}:
            response = JsonResponse(
                error_body(405, f"Method {request.method} not allowed; use GET"), status=405
            )
            response["Allow"] = "GET, HEAD"
            return response
        return view(request)

    return wrapped


@_get_only
def health_live(request: HttpRequest) -> JsonResponse:
    """The process answers; touches nothing else, so a slow database never restarts it."""
    return JsonResponse({"status": "alive"})


@_get_only
def health_ready(request: HttpRequest) -> JsonResponse:
    components = readiness_check()
    body = {name: result.public() for name, result in components.items()}
    failing = [name for name, result in components.items() if not result.ok]
    if failing:
        return JsonResponse(
            {
                **error_body(
                    503,
                    "Not ready: " + ", ".join(failing) + " failing",
                    error="Service Unavailable",
                ),
                "components": body,
            },
            status=503,
        )
    return JsonResponse({"status": "ready", "components": body})


@_get_only
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.PHONOS_METRICS_TOKEN
    if not token:
        return JsonResponse(error_body(404, "Not found"), status=404)
    supplied = request.headers.get("Authorization", "")
    if not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
        return JsonResponse(
            error_body(401, "GET /metrics needs Authorization: Bearer <PHONOS_METRICS_TOKEN>"),
            status=401,
        )
    try:
        return HttpResponse(metrics_render(), content_type=PROMETHEUS_CONTENT_TYPE)
    except redis.RedisError:
        logger.warning("Could not read metrics from Redis", exc_info=True)
        return JsonResponse(
            error_body(503, "Metrics are unavailable: Redis", error="Service Unavailable"),
            status=503,
        )
