from rest_framework.permissions import BasePermission

from apps.accounts.models import ApiKey


class HasApiKey(BasePermission):
    message = "Missing API key; send 'Authorization: Bearer pk_...'"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiKey)
