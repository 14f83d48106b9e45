"""``Authorization: Bearer sk_<prefix>_<secret>`` for the REST API."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from profiles.models import ApiKey
from profiles.services import KeyRejected, api_key_authenticate


class ApiKeyUser(AnonymousUser):
    """The request.user of a key-authenticated call: authenticated, no Django
    permissions, carries the key. Tenant access comes from the key alone."""

    def __init__(self, key: ApiKey) -> None:
        self.api_key = key

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"api-key:{self.api_key.prefix}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != self.keyword.lower():
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer <api key>'."
            )
        try:
            key = api_key_authenticate(raw=parts[1])
        except KeyRejected as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        return ApiKeyUser(key), key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "profiles.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "sk_<prefix>_<secret>"}
