"""drf-spectacular extensions, so `/v1/openapi.json` describes how Phonos really authenticates.

Imported from `CommonConfig.ready`: an extension registers itself when its module is imported.
"""

from typing import TYPE_CHECKING

from drf_spectacular.extensions import OpenApiAuthenticationExtension

if TYPE_CHECKING:
    # Not at run time: it imports DRF's views, which import this app's permission classes.
    from drf_spectacular.openapi import AutoSchema


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    # A dotted path, so that apps.common need not import apps.accounts.
    target_class = "apps.accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: "AutoSchema") -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "pk_...",
            "description": "An API key from the dashboard: `Authorization: Bearer pk_...`.",
        }
