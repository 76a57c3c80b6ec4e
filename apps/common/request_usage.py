"""What one API request used, for the usage record written after its response.

Who knows a fact sets it here (authentication: the key; an API view: the model and the credits
it charged); `apps.usage`'s middleware reads it once the response is ready. One typed object
per request instead of loose attributes, and ids rather than rows, so `common` knows no domain.
"""

from dataclasses import dataclass

from django.http import HttpRequest
from rest_framework.request import Request

_ATTRIBUTE = "phonos_usage"


@dataclass
class RequestUsage:
    api_key_id: int | None = None
    account_id: int | None = None
    model: str = ""
    credits: int = 0


def request_usage(request: HttpRequest | Request) -> RequestUsage:
    """This request's usage, created on first use; DRF's Request and the Django request it wraps
    share one."""
    django_request = request._request if isinstance(request, Request) else request
    usage = getattr(django_request, _ATTRIBUTE, None)
    if usage is None:
        usage = RequestUsage()
        setattr(django_request, _ATTRIBUTE, usage)
    return usage
