from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from apps.common.exception_handler import error_body


class RequestSizeLimitMiddleware:
    """Refuse oversized bodies with 413 before anything reads them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw_length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw_length)
        except ValueError:
            return JsonResponse(error_body(400, "Content-Length is not a number"), status=400)
        limit = settings.PHONOS_MAX_REQUEST_BYTES
        if length > limit:
            return JsonResponse(
                error_body(413, f"The request body is {length} bytes; the limit is {limit} bytes"),
                status=413,
            )
        return self.get_response(request)
