"""`/v1/openapi.json`, built once per process.

The document depends only on the code, yet drf-spectacular builds it on every request (tens of
milliseconds of CPU), and the endpoint is public: an anonymous client could keep API threads busy
with it. The first request for each media type renders it; later ones get the same bytes.
"""

import threading
from typing import Any, ClassVar

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request


class CachedOpenApiView(SpectacularJSONAPIView):
    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes: list[type[BasePermission]] = []
    # media type → (body, Content-Type, Content-Disposition)
    _documents: ClassVar[dict[str, tuple[bytes, str, str]]] = {}
    _lock = threading.Lock()

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        media_type = request.accepted_media_type
        document = self._documents.get(media_type)
        if document is None:
            with self._lock:
                document = self._documents.get(media_type)
                if document is None:
                    document = self._build(request, *args, **kwargs)
                    self._documents[media_type] = document
        body, content_type, disposition = document
        return HttpResponse(
            body, content_type=content_type, headers={"Content-Disposition": disposition}
        )

    def _build(self, request: Request, *args: Any, **kwargs: Any) -> tuple[bytes, str, str]:
        # drf-spectacular leaves its views' `get` unannotated.
        response = super().get(request, *args, **kwargs)  # type: ignore[no-untyped-call]
        response.accepted_renderer = request.accepted_renderer
        response.accepted_media_type = request.accepted_media_type
        response.renderer_context = self.get_renderer_context()
        response.render()
        return response.content, response["Content-Type"], response["Content-Disposition"]
