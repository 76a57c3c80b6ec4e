import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from apps.common.exceptions import ApplicationError, TooManyRequests

logger = logging.getLogger(__name__)

ERROR_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Insufficient credits",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
}


def error_body(status: int, message: str, error: str | None = None) -> dict[str, str]:
    return {"error": error or ERROR_TITLES.get(status, "Error"), "message": message}


def flatten_validation_detail(detail: object, prefix: str = "") -> list[str]:
    """Render DRF's nested validation detail as `field: problem` lines naming each field."""
    if isinstance(detail, dict):
        lines: list[str] = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            path = f"{prefix}.{name}" if prefix and name else (name or prefix)
            lines.extend(flatten_validation_detail(value, path))
        return lines
    if isinstance(detail, list):
        lines = []
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                lines.extend(flatten_validation_detail(value, f"{prefix}[{index}]"))
            else:
                lines.extend(flatten_validation_detail(value, prefix))
        return lines
    text = str(detail)
    return [f"{prefix}: {text}" if prefix else text]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, ApplicationError):
        status, body = exc.status_code, error_body(exc.status_code, exc.message, exc.error)
        if isinstance(exc, TooManyRequests):
            body["reason"] = exc.reason
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, drf_exceptions.ValidationError):
        status = 400
        body = error_body(400, "; ".join(flatten_validation_detail(exc.detail)))
    elif isinstance(exc, drf_exceptions.ParseError):
        status, body = 400, error_body(400, f"Malformed request body: {exc.detail}")
    elif isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        status = 401
        body = error_body(401, str(exc.detail))
        headers["WWW-Authenticate"] = 'Bearer realm="phonos"'
    elif isinstance(exc, drf_exceptions.Throttled):
        status = 429
        body = error_body(429, str(exc.detail))
        # DRF sets `wait` in Throttled.__init__; its stubs do not declare it.
        wait: float | None = exc.wait  # type: ignore[attr-defined]
        if wait is not None:
            headers["Retry-After"] = str(int(wait))
    elif isinstance(exc, drf_exceptions.APIException):
        status = exc.status_code
        body = error_body(
            status,
            str(exc.detail)
            if not isinstance(exc.detail, dict | list)
            else "; ".join(flatten_validation_detail(exc.detail)),
        )
    elif isinstance(exc, Http404):
        status, body = 404, error_body(404, "The requested resource was not found")
    elif isinstance(exc, PermissionDenied):
        status, body = 403, error_body(403, "You do not have permission to do this")
    elif isinstance(exc, RequestDataTooBig):
        status, body = 413, error_body(413, "The request body is too large")
    else:
        logger.exception("Unhandled error in API view", exc_info=exc)
        status, body = 500, error_body(500, "An unexpected error occurred; it has been logged")
    set_rollback()
    return Response(body, status=status, headers=headers)


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:  # noqa: ARG001 - Django's signature
    return JsonResponse(error_body(404, f"No such endpoint: {request.path}"), status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:  # noqa: ARG001 - Django's signature
    return JsonResponse(
        error_body(500, "An unexpected error occurred; it has been logged"), status=500
    )
