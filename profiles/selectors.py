"""Reads for tenancy and identity."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from profiles.models import Membership, Organization, Profile, alert_email_lines
from profiles.tenancy import for_org


def profile_list(*, org: Organization) -> QuerySet[Profile]:
    return for_org(Profile.objects.all(), org).order_by("external_id")


def profile_get(*, org: Organization, external_id: str) -> Profile | None:
    return for_org(Profile.objects.all(), org).filter(external_id=external_id).first()


def user_by_email(*, email: str):  # noqa: ANN201 - the user model is swappable
    """The user an e-mail address names (case aside), if any."""
    return get_user_model().objects.filter(email__iexact=email).first()


def membership_role(*, user, org: Organization) -> str | None:
    if user.is_superuser:
        return Membership.Role.OWNER
    return (
        Membership.objects.filter(user=user, organization=org)
        .values_list("role", flat=True)
        .first()
    )


def alert_recipients(*, org: Organization) -> list[str]:
    """Owners' and admins' emails plus the organization's extra recipients, deduplicated."""
    emails = list(
        Membership.objects.filter(organization=org, role__in=Membership.MANAGING_ROLES)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    emails += alert_email_lines(org.alert_emails)
    seen: dict[str, str] = {}
    for email in emails:
        seen.setdefault(email.lower(), email)
    return list(seen.values())
