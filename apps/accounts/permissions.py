from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from apps.accounts.models import ApiKey


class HasApiKey(BasePermission):
    message = "Missing API key; send 'Authorization: Bearer pk_...'"

    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.auth, ApiKey)
