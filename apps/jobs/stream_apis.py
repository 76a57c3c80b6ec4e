"""The event stream's view wrapper: an entry point (it records the stream's usage itself, so it
may call `apps.usage`, which comes after jobs in the import order)."""

import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from apps.jobs.streams import on_db_thread
from apps.usage.middleware import request_usage_record


def stream_view(
    view: Callable[..., HttpResponseBase],
) -> Callable[..., Coroutine[Any, Any, HttpResponseBase]]:
    """Turn a sync view that answers with `job_event_response` into an async one.

    Under ASGI its set-up (authentication, rate limit, tenancy, slot) runs on the streams'
    database threads; under WSGI on the request's own thread, as any sync view. Attributes
    such as DRF's `cls` (read by the OpenAPI generator) are kept."""

    @functools.wraps(view)
    async def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not isinstance(request, ASGIRequest):
            return await sync_to_async(view, thread_sensitive=True)(request, *args, **kwargs)

        def set_up() -> HttpResponseBase:
            started = time.perf_counter()
            response = view(request, *args, **kwargs)
            # Recorded here, on this pool thread: left to the usage middleware, it would open a
            # database connection on the request's own thread and hold it until the stream ends.
            request_usage_record(request, status_code=response.status_code, started=started)
            return response

        return await on_db_thread(set_up)()

    return endpoint
