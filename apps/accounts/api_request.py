"""The request that a /v1 view receives once `ApiKeyAuthentication` has accepted a key."""

from rest_framework.request import Request

from apps.accounts.models import Account, ApiKey


class ApiKeyRequest(Request):
    """For annotations only (DRF builds a plain `Request`): the authenticated key's Account is
    `user` and the ApiKey is `auth`, as `ApiKeyAuthentication.authenticate` returns them."""

    # DRF's stubs fix `user` to AUTH_USER_MODEL (the dashboard's User); the API's is the Account.
    user: Account  # type: ignore[assignment]
    auth: ApiKey
