from rest_framework import authentication, exceptions
from rest_framework.request import Request

from apps.accounts.key_cache import api_key_lookup, api_key_revalidate, api_key_touched
from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_touch
from apps.common.request_usage import request_usage


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer pk_...`. Sets request.user to the key's Account, request.auth to the key.

    The lookup may come from this process's key cache (apps.accounts.key_cache); the rate
    limit's round trip then says whether a revocation happened since, and `revalidate` reads
    the key again before the view runs."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw_key = header.partition(" ")
        raw_key = raw_key.strip()
        if scheme.lower() != "bearer" or not raw_key:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header; expected 'Bearer pk_...'"
            )
        api_key = api_key_lookup(raw_key=raw_key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key")
        return self._authenticated(request, api_key)

    def revalidate(self, request: Request, credentials_version: int | None) -> None:
        """Called with the credentials version read in the rate limit's round trip."""
        api_key = api_key_revalidate(api_key=request.auth, version=credentials_version)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key")
        if api_key is not request.auth:
            request.user, request.auth = self._authenticated(request, api_key)

    def _authenticated(self, request, api_key: ApiKey) -> tuple:
        used_at = api_key.last_used_at
        api_key_touch(api_key=api_key)
        if api_key.last_used_at != used_at:
            api_key_touched(api_key=api_key)
        usage = request_usage(request)
        usage.api_key_id, usage.account_id = api_key.id, api_key.account_id
        return (api_key.account, api_key)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="phonos"'
