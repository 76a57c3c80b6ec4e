"""Result downloads for the signed-in browser: the /v1 result views themselves, authenticated by
the Django session instead of a bearer key, so both read outputs through the same code."""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.schemas.inspectors import ViewInspector
from rest_framework.views import APIView

from apps.accounts.models import Account, User
from apps.jobs.result_apis import JobArchiveApi, JobConfidenceApi, JobStructureApi

if TYPE_CHECKING:
    from rest_framework.permissions import _PermissionClass


class AccountSessionAuthentication(SessionAuthentication):
    """The session's user, seen by the views as its Account (as a bearer key's account is)."""

    def authenticate(self, request: Request) -> tuple[Account, None] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user: User = result[0]
        if user.account is None:
            return None
        return (user.account, None)


class SignedInAccount(BasePermission):
    message = "Sign in to the dashboard first"

    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.user, Account)


class SessionMixin:
    authentication_classes: Sequence[type[BaseAuthentication]] = [AccountSessionAuthentication]
    permission_classes: Sequence["_PermissionClass"] = [SignedInAccount]
    # Not part of the public API's schema.
    schema: ViewInspector | None = None


class DashboardConfidenceView(SessionMixin, JobConfidenceApi):
    pass


class DashboardArchiveView(SessionMixin, JobArchiveApi):
    pass


class DashboardStructureView(SessionMixin, JobStructureApi):
    pass
