"""Result downloads for the signed-in browser: the /v1 result views themselves, authenticated by
the Django session instead of a bearer key, so both read outputs through the same code."""

from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission

from apps.accounts.models import Account
from apps.jobs.result_apis import JobArchiveApi, JobConfidenceApi, JobStructureApi


class AccountSessionAuthentication(SessionAuthentication):
    """The session's user, seen by the views as its Account (as a bearer key's account is)."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None or result[0].account is None:
            return None
        return (result[0].account, None)


class SignedInAccount(BasePermission):
    message = "Sign in to the dashboard first"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, Account)


class SessionMixin:
    authentication_classes = [AccountSessionAuthentication]
    permission_classes = [SignedInAccount]
    # Not part of the public API's schema.
    schema = None


class DashboardConfidenceView(SessionMixin, JobConfidenceApi):
    pass


class DashboardArchiveView(SessionMixin, JobArchiveApi):
    pass


class DashboardStructureView(SessionMixin, JobStructureApi):
    pass
