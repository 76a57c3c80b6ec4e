from django.http import HttpRequest
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from apps.accounts.api_request import ApiKeyRequest
from apps.accounts.key_cache import api_key_lookup, api_key_revalidate, api_key_touched
from apps.accounts.models import Account, ApiKey
from apps.accounts.services import api_key_touch
from apps.common.request_usage import request_usage

REVOKED_MESSAGE = "Invalid or revoked API key"


def _bearer_raw_key(request: HttpRequest | Request) -> str | None:
    """The key of a well-formed `Authorization: Bearer pk_...`; None without the header; raises
    AuthenticationFailed for a malformed one."""
    header: str = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    scheme, _, raw_key = header.partition(" ")
    raw_key = raw_key.strip()
    if scheme.lower() != "bearer" or not raw_key:
        raise exceptions.AuthenticationFailed(
            "Malformed Authorization header; expected 'Bearer pk_...'"
        )
    return raw_key


def _accepted(request: HttpRequest | Request, api_key: ApiKey) -> ApiKey:
    """A key that authenticated this request: its use recorded (at most every few minutes)
    and named in the request's usage."""
    used_at = api_key.last_used_at
    api_key_touch(api_key=api_key)
    if api_key.last_used_at != used_at:
        api_key_touched(api_key=api_key)
    usage = request_usage(request)
    usage.api_key_id, usage.account_id = api_key.id, api_key.account_id
    return api_key


def _revalidated(request: HttpRequest | Request, api_key: ApiKey, version: int | None) -> ApiKey:
    """The key again if it was read before the credentials `version` (read in the rate limit's
    round trip); AuthenticationFailed if it was revoked or deleted meanwhile."""
    current = api_key_revalidate(api_key=api_key, version=version)
    if current is None:
        raise exceptions.AuthenticationFailed(REVOKED_MESSAGE)
    return current if current is api_key else _accepted(request, current)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer pk_...`. Sets request.user to the key's Account, request.auth to the key.

    The lookup may come from this process's key cache (apps.accounts.key_cache); the rate
    limit's round trip then says whether a revocation happened since, and `revalidate` reads
    the key again before the view runs."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Account, ApiKey] | None:
        raw_key = _bearer_raw_key(request)
        if raw_key is None:
            return None
        api_key = api_key_lookup(raw_key=raw_key)
        if api_key is None:
            raise exceptions.AuthenticationFailed(REVOKED_MESSAGE)
        _accepted(request, api_key)
        return (api_key.account, api_key)

    def revalidate(self, request: ApiKeyRequest, credentials_version: int | None) -> None:
        """Called with the credentials version read in the rate limit's round trip."""
        api_key = _revalidated(request, request.auth, credentials_version)
        if api_key is not request.auth:
            request.user, request.auth = api_key.account, api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="phonos"'


class BearerKeyLean:
    """The same authentication for the hot path (apps.common.apis.lean_view), without DRF:
    `authenticate` answers None for every request that ApiKeyAuthentication would refuse, and
    that request goes to the DRF view, which refuses it in the usual words."""

    def authenticate(self, request: HttpRequest) -> ApiKey | None:
        try:
            raw_key = _bearer_raw_key(request)
        except exceptions.AuthenticationFailed:
            return None
        api_key = api_key_lookup(raw_key=raw_key) if raw_key is not None else None
        return _accepted(request, api_key) if api_key is not None else None

    def revalidate(self, request: HttpRequest, api_key: ApiKey, version: int | None) -> ApiKey:
        return _revalidated(request, api_key, version)
