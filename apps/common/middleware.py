from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.urls import Resolver404, resolve

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


class LeanApiMiddleware:
    """The hot path's endpoints (apps.common.apis.lean_view: the polled reads and the
    submission) answered before the dashboard's middleware.

    Sessions, CSRF, authentication by session, messages, django-axes and whitenoise do nothing
    for a bearer-key request, yet they were a sixth of a GET's cost once the read itself was
    lean. This middleware sits after SecurityMiddleware: for a request under its method's path
    in `PATHS`, it resolves the route, and if the route has a `lean_answer` that takes the
    request it returns that answer with what the skipped middleware would have added to it
    (X-Frame-Options, Content-Length: their own process_response). Anything the lean answer
    declines goes down the whole chain."""

    # Only where a lean answer may be, so that other requests are not resolved twice.
    PATHS = {"GET": "/v1/jobs", "POST": "/v1/predict"}

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        # Typed loosely: Django's stubs disagree on which response class each one takes.
        self._finishers: tuple[Callable[[HttpRequest, Any], Any], ...] = (
            CommonMiddleware(get_response).process_response,
            XFrameOptionsMiddleware(get_response).process_response,
        )

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        path = self.PATHS.get(request.method or "")
        if path is not None and request.path_info.startswith(path):
            try:
                match = resolve(request.path_info)
            except Resolver404:
                return self.get_response(request)
            answer = getattr(match.func, "lean_answer", None)
            if answer is not None:
                request.resolver_match = match
                answered: HttpResponse | None = answer(request, *match.args, **match.kwargs)
                if answered is not None:
                    response: HttpResponseBase = answered
                    for finish in self._finishers:
                        response = finish(request, response)
                    return response
                request.resolver_match = None
        return self.get_response(request)
