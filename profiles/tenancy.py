"""The one choke point of tenant visibility.

Every admin queryset, foreign-key choice, API view and selector that touches
tenant data goes through these functions, so a new model or endpoint cannot see
another tenant's rows unless it goes out of its way to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from django.db import models

from profiles.models import Membership, Organization

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

M = TypeVar("M", bound=models.Model)


def orgs_visible_to(user: User | AnonymousUser | None) -> models.QuerySet[Organization]:
    """Organizations a user may see: all for superusers, their memberships otherwise."""
    if user is None or not user.is_authenticated or not user.is_active:
        return Organization.objects.none()
    if user.is_superuser:
        return Organization.objects.all()
    return Organization.objects.filter(memberships__user=user).distinct()


def orgs_managed_by(user: User | AnonymousUser | None) -> models.QuerySet[Organization]:
    """Organizations a user may change: all for superusers, owner/admin memberships otherwise."""
    if user is None or not user.is_authenticated or not user.is_active:
        return Organization.objects.none()
    if user.is_superuser:
        return Organization.objects.all()
    return Organization.objects.filter(
        memberships__user=user, memberships__role__in=Membership.MANAGING_ROLES
    ).distinct()


def for_org(
    queryset: models.QuerySet[M], org: Organization, *, path: str = "organization"
) -> models.QuerySet[M]:
    """Restrict a queryset to one organization through the field ``path``."""
    return queryset.filter(**{path: org})


def for_orgs(
    queryset: models.QuerySet[M],
    orgs: models.QuerySet[Organization],
    *,
    path: str = "organization",
) -> models.QuerySet[M]:
    """Restrict a queryset to a set of organizations through the field ``path``.

    ``path`` may be ``None``-able (a global catalog row has no organization);
    callers that want global rows too add them explicitly.
    """
    if path == "":
        return queryset.filter(pk__in=orgs.values("pk"))
    return queryset.filter(**{f"{path}__in": orgs.values("pk")})
