"""User accounts going away, deleted or deactivated: an organization that has
an owner who can log in keeps one. Delete accounts with ``users_delete``:
the user model's own ``delete()`` does not ask."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from profiles.models import Membership
from profiles.services.memberships import memberships_delete_check


def users_owner_check(*, users: Iterable[AbstractBaseUser]) -> None:
    """Raise ValidationError, one message naming each organization, when the
    accounts of ``users`` going away together (deleted, or deactivated so
    they cannot log in) would leave an organization without an owner who can
    log in (``organization_owner_check``, which leaves an organization that
    has none already as it is).

    Locks the organizations they own in the caller's transaction, which
    should delete or deactivate them before it commits: two owners' accounts
    removed at once are judged one after the other, and the second is
    refused."""
    owned = Membership.objects.filter(
        user_id__in=[user.pk for user in users], role=Membership.Role.OWNER
    )
    memberships_delete_check(memberships=owned)


def users_delete(*, users: Iterable[AbstractBaseUser]) -> None:
    """Delete the accounts of ``users``, and with them their memberships.
    Raises ValidationError, deleting nothing, when that would leave an
    organization without an owner who can log in (``users_owner_check``)."""
    users = list(users)  # a queryset is read once: what is checked is what goes
    with transaction.atomic():
        users_owner_check(users=users)
        get_user_model().objects.filter(pk__in=[user.pk for user in users]).delete()
