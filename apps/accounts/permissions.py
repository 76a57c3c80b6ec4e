from typing import TYPE_CHECKING

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps.accounts.models import ApiKey

if TYPE_CHECKING:
    # Not at run time: DRF's views module imports this one (DEFAULT_PERMISSION_CLASSES).
    from rest_framework.views import APIView


class HasApiKey(BasePermission):
    message = "Missing API key; send 'Authorization: Bearer pk_...'"

    def has_permission(self, request: Request, view: "APIView") -> bool:
        return isinstance(request.auth, ApiKey)
