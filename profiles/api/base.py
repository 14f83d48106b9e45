"""The base of every tenant API view: the only way views reach tenant data.

``initial()`` resolves ``request.org`` (and ``request.profile`` for a key bound to
one) from the credential and fails closed; views read through ``self.scoped()``
and ``self.get_scoped_or_404()``, which filter by that organization.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from django.db import models
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.middleware import nul_parameters
from profiles.api.errors import ApiError
from profiles.authentication import ApiKeyUser
from profiles.models import Membership, Organization, Profile
from profiles.services import CredentialsVanished, profile_get_or_create
from profiles.tenancy import for_org, orgs_visible_to

if TYPE_CHECKING:
    from django.contrib.auth.models import User

M = TypeVar("M", bound=models.Model)

# What a staff user's session may do through the browsable API, by role. Looked
# up with None too: a superuser without a membership has no role.
ROLE_SCOPES: dict[str | None, set[str]] = {
    Membership.Role.OWNER: {"ingest", "check", "read", "manage"},
    Membership.Role.ADMIN: {"ingest", "check", "read", "manage"},
    Membership.Role.MEMBER: {"read"},
    Membership.Role.VIEWER: {"read"},
}


class HasScope(BasePermission):
    """The credential carries the scope the view asks for this method (-> 403)."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request: Request, view: APIView) -> bool:
        needed = view.required_scope(request)  # type: ignore[attr-defined]
        if needed is None:
            return True
        return needed in request.scopes  # type: ignore[attr-defined]


class TenantApiView(APIView):
    """Resolves the organization from the credential; every tenant view derives from it.

    ``scopes`` maps HTTP methods to the scope they need; ``"*"`` is the default.
    ``None`` means any authenticated credential of the organization will do.
    """

    permission_classes = [HasScope]
    scopes: ClassVar[dict[str, str | None]] = {}

    def required_scope(self, request: Request) -> str | None:
        # HEAD runs the GET handler, so it needs what GET needs.
        method = request.method or "GET"
        if method == "HEAD":
            method = "GET"
        return self.scopes.get(method, self.scopes.get("*"))

    @property
    def bound_profile(self) -> Profile | None:
        """The profile the request's key is bound to, if any (``request.profile``,
        set by ``_resolve_tenant``): such a key acts only for that profile."""
        profile: Profile | None = self.request.profile  # type: ignore[attr-defined]
        return profile

    @property
    def bound_profile_id(self) -> uuid.UUID | None:
        """The id of the profile the request's key is bound to, if any: such a
        key acts only for that profile."""
        profile = self.bound_profile
        return profile.pk if profile is not None else None

    def handle_exception(self, exc: Exception) -> Response:
        # The key that authenticated the request was deleted while it was
        # served: answered as any key that no longer authenticates.
        if isinstance(exc, CredentialsVanished):
            exc = exceptions.AuthenticationFailed(
                "This API key was deleted while the request was served."
            )
        return super().handle_exception(exc)

    def check_permissions(self, request: Request) -> None:
        self._resolve_tenant(request)
        super().check_permissions(request)
        bad = nul_parameters(request.query_params)
        if bad:
            raise ApiError(
                "The query is invalid; see details.",
                details={
                    k.replace("\x00", "") or "query": "Must not contain NUL characters."
                    for k in bad
                },
            )

    def _resolve_tenant(self, request: Request) -> None:
        user = request.user
        request.org = None  # type: ignore[attr-defined]
        request.profile = None  # type: ignore[attr-defined]
        request.api_key = None  # type: ignore[attr-defined]
        request.scopes = frozenset()  # type: ignore[attr-defined]
        if isinstance(user, ApiKeyUser):
            key = user.api_key
            request.api_key = key  # type: ignore[attr-defined]
            request.org = key.organization  # type: ignore[attr-defined]
            request.profile = key.profile  # type: ignore[attr-defined]
            request.scopes = frozenset(key.scopes)  # type: ignore[attr-defined]
            return
        if user is None or not getattr(user, "is_authenticated", False):
            self.permission_denied(request)  # raises NotAuthenticated
            return
        # A staff user's session (a key's user returned above, an anonymous one
        # was refused): the organization is the one named by ?org=<slug> or
        # X-Organization, else their only membership.
        user = cast("User", user)
        orgs = orgs_visible_to(user)
        slug = request.query_params.get("org") or request.headers.get("X-Organization")
        org = orgs.filter(slug=slug).first() if slug else None
        if org is None and not slug:
            candidates = list(orgs[:2])
            org = candidates[0] if len(candidates) == 1 else None
        if org is None:
            raise ApiError(
                "Name the organization with ?org=<slug> or the X-Organization header.",
                code="not_found",
                status_code=404,
            )
        request.org = org  # type: ignore[attr-defined]
        role = (
            Membership.Role.OWNER
            if user.is_superuser
            else (
                Membership.objects.filter(user=user, organization=org)
                .values_list("role", flat=True)
                .first()
            )
        )
        request.scopes = frozenset(ROLE_SCOPES.get(role, set()))  # type: ignore[attr-defined]

    # -- the only doors to tenant data ------------------------------------------------

    @property
    def org(self) -> Organization:
        return self.request.org  # type: ignore[attr-defined]

    def scoped(
        self, queryset: models.QuerySet[M], *, path: str = "organization"
    ) -> models.QuerySet[M]:
        return for_org(queryset, self.org, path=path)

    def get_scoped_or_404(self, queryset: models.QuerySet[M], **lookup: Any) -> M:
        obj = self.scoped(queryset).filter(**lookup).first()
        if obj is None:
            raise ApiError("Not found.", code="not_found", status_code=404)
        return obj

    def acting_profile(self, external_id: str | None, *, create: bool) -> Profile | None:
        """The profile a request acts for.

        A key bound to a profile acts only for it: naming another is a 403.
        An unknown profile is created on the fly by writes and is a 404 for reads."""
        acting = self.acting_for(external_id)
        if not isinstance(acting, str):
            return acting
        if create:
            return profile_get_or_create(org=self.org, external_id=acting)
        profile = self.scoped(Profile.objects.all()).filter(external_id=acting).first()
        if profile is None:
            raise ApiError(f"Unknown profile {acting!r}.", code="not_found", status_code=404)
        return profile

    def acting_for(self, external_id: str | None) -> Profile | str | None:
        """``acting_profile`` before any lookup: the key's own profile, no
        profile, or the name of the profile to look up (checked)."""
        if external_id and ("\x00" in external_id or len(external_id) > 255):
            raise ApiError(
                "The request is invalid; see details.",
                details={"profile": "Must be at most 255 characters, without NUL."},
            )
        bound: Profile | None = self.request.profile  # type: ignore[attr-defined]
        if bound is not None:
            if external_id not in (None, "", bound.external_id):
                raise ApiError(
                    "This API key acts only for its own profile.",
                    code="forbidden",
                    status_code=403,
                )
            return bound
        return external_id or None
