"""The production URLs plus `/bench/bare`, a plain Django JSON view: the floor that the
middleware stack, routing and gunicorn set, with no DRF, authentication or database."""

from django.http import HttpRequest, JsonResponse
from django.urls import path

from phonos.urls import handler404, handler500
from phonos.urls import urlpatterns as phonos_urlpatterns

__all__ = ["handler404", "handler500", "urlpatterns"]


def bare(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [path("bench/bare", bare, name="bench-bare"), *phonos_urlpatterns]
