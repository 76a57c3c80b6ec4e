"""The live job page's event stream: the same stream as `GET /v1/jobs/{id}/events`,
authenticated by the dashboard session, since a browser's EventSource cannot send a bearer
header. Routed to the ASGI stream process like the API's (docs/serving.md)."""

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from apps.accounts.models import Account
from apps.common.exception_handler import error_body
from apps.common.exceptions import TooManyRequests
from apps.dashboard.views import _found, account_required
from apps.jobs.selectors import job_get
from apps.jobs.stream_apis import stream_view
from apps.jobs.streams import job_event_response


@stream_view
@account_required
def job_events(
    request: HttpRequest, account: Account, job_id: str
) -> StreamingHttpResponse | JsonResponse:
    job = _found(lambda: job_get(account=account, job_id=job_id))
    try:
        return job_event_response(
            request=request,
            job=job,
            account_id=account.id,
            last_event_id=request.headers.get("Last-Event-ID"),
        )
    except TooManyRequests as error:
        response = JsonResponse(error_body(429, error.message, error.error), status=429)
        response["Retry-After"] = str(error.retry_after)
        return response
