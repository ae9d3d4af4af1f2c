"""Who is calling: a clinic's API key, sent as `Authorization: Bearer cfk_…` (the one way),
and what its scope lets it do. The docs and the schema are for staff sessions instead."""

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from integrations.api.keys import api_key_authenticate
from integrations.api.refusals import ApiError
from integrations.models import ApiKey


class ApiKeyAuthentication(BaseAuthentication):
    """Missing header: DRF answers 401 (not authenticated); a wrong one: 401 here. Both
    carry WWW-Authenticate (authenticate_header). The caller is no user: request.user stays
    anonymous (so the audit trail names the key, not a user), request.auth is the key."""

    @sensitive_variables("token", "header")
    def authenticate(self, request: Request) -> tuple[AnonymousUser, ApiKey] | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed(
                "Send the API key as “Authorization: Bearer <key>”."
            )
        api_key = api_key_authenticate(token=token.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return AnonymousUser(), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="careflow"'


class ApiKeyScope(BasePermission):
    """Any active key reads; only a write key writes (403 insufficient_scope otherwise)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            raise exceptions.NotAuthenticated("Send the API key as “Authorization: Bearer <key>”.")
        if request.method not in SAFE_METHODS and api_key.scope != ApiKey.Scope.WRITE:
            raise ApiError(
                403, "insufficient_scope", "This API key may only read; writing needs a write key."
            )
        return True


def request_api_key(request: Request) -> ApiKey:
    api_key = request.auth
    assert isinstance(api_key, ApiKey)  # noqa: S101 — ApiKeyScope ran first
    return api_key


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = ApiKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A clinic's API key (cfk_…), created by a clinic admin in the admin "
            "under Integrations › API keys. Read keys may only GET.",
        }
