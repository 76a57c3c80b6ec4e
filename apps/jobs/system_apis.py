"""GET /v1/system/status and its staff page: workers, models, queues and build, for operators.

Only staff see it: a bearer key of an account one of whose users is staff, or a staff
session. Everyone else gets the same 404 as an unknown path, so the endpoint is not advertised.
"""

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.utils import extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.authentication import ApiKeyAuthentication
from apps.accounts.models import Account
from apps.common.apis import PhonosApiView
from apps.common.exceptions import NotFound
from apps.jobs.availability import system_status


def _is_staff(request: Request) -> bool:
    user = request.user
    if isinstance(user, Account):
        return user.users.filter(is_staff=True, is_active=True).exists()
    return bool(user is not None and getattr(user, "is_staff", False))


class SystemStatusApi(PhonosApiView):
    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [AllowAny]

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        if not _is_staff(request):
            raise NotFound(f"No such endpoint: {request.path}")
        return Response(system_status())


@staff_member_required
def system_status_page(request: HttpRequest) -> HttpResponse:
    return render(request, "jobs/system_status.html", {"status": system_status()})
