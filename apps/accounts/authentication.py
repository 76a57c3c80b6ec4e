from rest_framework import authentication, exceptions
from rest_framework.request import Request

from apps.accounts.models import Account, ApiKey
from apps.accounts.selectors import api_key_get_active
from apps.accounts.services import api_key_touch
from apps.common.request_usage import request_usage


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer pk_...`. Sets request.user to the key's Account, request.auth to the key."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Account, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw_key = header.partition(" ")
        raw_key = raw_key.strip()
        if scheme.lower() != "bearer" or not raw_key:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header; expected 'Bearer pk_...'"
            )
        api_key = api_key_get_active(raw_key=raw_key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key")
        api_key_touch(api_key=api_key)
        usage = request_usage(request)
        usage.api_key_id, usage.account_id = api_key.id, api_key.account_id
        return (api_key.account, api_key)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="phonos"'
