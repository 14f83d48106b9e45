"""Who belongs to an organization, and in which role; an organization that
has an owner (who can log in) always keeps one."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from profiles.models import (
    Membership,
    Organization,
)
from profiles.services.organizations import _user_for_email, organizations_lock


def organization_owner_check(
    *,
    org_id: uuid.UUID | str,
    roles: Mapping[int, str | None],
    new_owners: Collection[object] = (),
) -> None:
    """Raise ValidationError when the organization ``org_id``, which has an
    owner, would be left with none once the memberships in ``roles`` (by id)
    take their new role (None: deleted, or moved to another organization)
    and the users ``new_owners`` (ids) are made owners, in new rows or rows
    handed to them: the last owner
    removing or demoting themselves would leave nobody who surely manages
    it, but operators. An organization that has no owner (made without one)
    is left as it is.

    An owner counts only while their account is active: one who cannot log
    in manages nothing, so an organization whose owners are all deactivated
    has none, and a deactivated member made owner gives it none.

    Locks the organization first (``organizations_lock``) in the caller's
    transaction, which should make the change before it commits: two
    managers taking away each other's ownership at once are judged one after
    the other, and the second is refused. Then the new owners' accounts, so
    that one being deactivated meanwhile (``users_owner_check``, which locks
    them first) is seen here as it ends."""
    with transaction.atomic():
        organizations_lock([org_id])
        arriving = _active_locked(new_owners)
        owner = Membership.Role.OWNER
        rows = list(
            Membership.objects.filter(organization_id=org_id, user__is_active=True)
            .filter(Q(role=owner) | Q(pk__in=list(roles)))
            .values_list("pk", "role")
        )
        now = {pk for pk, role in rows if role == owner}
        after = {pk for pk, role in rows if roles.get(pk, role) == owner}
        if not now or after or arriving:
            return
        name = Organization.objects.filter(pk=org_id).values_list("name", flat=True).first()
        raise ValidationError(
            f"{name} would be left without an owner: make another member its owner first.",
            code="last_owner",
        )


def _active_locked(user_ids: Collection[object]) -> list[object]:
    """Of ``user_ids``, the accounts that can log in, locked for the
    caller's transaction (in id order, as ``users_owner_check`` takes them)."""
    if not user_ids:
        return []
    return list(
        get_user_model()
        .objects.select_for_update()
        .filter(pk__in=list(user_ids), is_active=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def memberships_delete_check(*, memberships: Iterable[Membership]) -> None:
    """Raise ValidationError when deleting ``memberships`` would leave an
    organization without an owner (``organization_owner_check``, whose locks
    the caller's transaction holds for the deletion), with one message for
    each such organization."""
    by_org: dict[uuid.UUID, dict[int, str | None]] = {}
    for membership in memberships:
        by_org.setdefault(membership.organization_id, {})[membership.pk] = None
    refusals: list[ValidationError] = []
    with transaction.atomic():
        organizations_lock(by_org)  # all at once, in the order every change takes them
        for org_id, roles in by_org.items():
            try:
                organization_owner_check(org_id=org_id, roles=roles)
            except ValidationError as exc:
                refusals.extend(exc.error_list)
    if refusals:
        raise ValidationError(sorted(refusals, key=lambda refusal: str(refusal.message)))


def membership_set_check(*, org: Organization, user, role: str) -> None:
    """Raise ValidationError when giving ``user`` the ``role`` in ``org``
    would take away its last owner (``organization_owner_check``)."""
    if role == Membership.Role.OWNER or user is None or user.pk is None:
        return
    mine = Membership.objects.filter(user=user, organization=org).values_list("pk", flat=True)
    organization_owner_check(org_id=org.pk, roles=dict.fromkeys(mine, role))


def membership_set(*, org: Organization, user, role: str) -> Membership:
    """Give ``user`` the ``role`` in ``org`` (staff flag on, so the admin opens).
    Raises ValidationError, changing nothing, when that would take away the
    organization's last owner."""
    with transaction.atomic():
        membership_set_check(org=org, user=user, role=role)
        membership, _ = Membership.objects.update_or_create(
            user=user, organization=org, defaults={"role": role}
        )
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
    return membership


def membership_invite(*, org: Organization, email: str, role: str) -> Membership:
    """Add the user with ``email`` (created if new: staff, no password yet) to ``org``."""
    return membership_set(org=org, user=_user_for_email(email), role=role)
