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
from profiles.services.organizations import organizations_lock


def users_owner_check(*, users: Iterable[AbstractBaseUser]) -> None:
    """Raise ValidationError, one message naming each organization, when the
    accounts of ``users`` going away together (deleted, or deactivated so
    they cannot log in) would leave an organization without an owner who can
    log in (``organization_owner_check``, which leaves an organization that
    has none already as it is).

    Locks the organizations they own, then the accounts, in the caller's
    transaction, which should delete or deactivate them before it commits:
    two owners' accounts removed at once are judged one after the other, and
    the second is refused; an account being made an owner meanwhile
    (``organization_owner_check`` locks the new owners' accounts) is either
    an owner here, or seen deactivated or gone when that check's turn comes."""
    ids = [user.pk for user in users]
    owned = Membership.objects.filter(user_id__in=ids, role=Membership.Role.OWNER)
    with transaction.atomic():
        # Organizations before accounts, the order organization_owner_check
        # takes them in; then again what they own now that no one can make
        # them owners meanwhile.
        organizations_lock({m.organization_id for m in owned})
        list(get_user_model().objects.select_for_update().filter(pk__in=ids).order_by("pk"))
        memberships_delete_check(memberships=list(owned.all()))  # read again


def users_delete(*, users: Iterable[AbstractBaseUser]) -> None:
    """Delete the accounts of ``users``, and with them their memberships.
    Raises ValidationError, deleting nothing, when that would leave an
    organization without an owner who can log in (``users_owner_check``)."""
    users = list(users)  # a queryset is read once: what is checked is what goes
    with transaction.atomic():
        users_owner_check(users=users)
        get_user_model().objects.filter(pk__in=[user.pk for user in users]).delete()
