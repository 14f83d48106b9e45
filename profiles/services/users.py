"""User accounts going away, deleted or deactivated: an organization that has
an owner who can log in keeps one. Delete accounts with ``users_delete``:
the user model's own ``delete()`` does not ask."""

from __future__ import annotations

import uuid
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
    an owner here, or seen deactivated or gone when that check's turn comes.
    An account made the owner of another organization after the first read
    of what they own is seen with the accounts locked: all is let go and
    taken again, that organization in its place in the order."""
    ids = [user.pk for user in users]
    owned = Membership.objects.filter(user_id__in=ids, role=Membership.Role.OWNER)
    organizations = {m.organization_id for m in owned}
    while True:
        try:
            # A savepoint: rolled back, it lets its locks go.
            with transaction.atomic():
                # Organizations before accounts, the order organization_owner_check
                # takes them in; then again what they own now that no one can make
                # them owners meanwhile.
                organizations_lock(organizations)
                list(get_user_model().objects.select_for_update().filter(pk__in=ids).order_by("pk"))
                memberships = list(owned.all())
                more = {m.organization_id for m in memberships} - organizations
                if more:
                    raise _OwnersMeanwhile(more)
                memberships_delete_check(memberships=memberships)
                return
        except _OwnersMeanwhile as exc:
            # Made owners of more organizations since the first read: their
            # locks come before the accounts', so take them all again in order.
            organizations |= exc.organizations


class _OwnersMeanwhile(Exception):
    def __init__(self, organizations: set[uuid.UUID]) -> None:
        super().__init__("made owners meanwhile")
        self.organizations = organizations


def users_delete(*, users: Iterable[AbstractBaseUser]) -> None:
    """Delete the accounts of ``users``, and with them their memberships.
    Raises ValidationError, deleting nothing, when that would leave an
    organization without an owner who can log in (``users_owner_check``)."""
    users = list(users)  # a queryset is read once: what is checked is what goes
    with transaction.atomic():
        users_owner_check(users=users)
        get_user_model().objects.filter(pk__in=[user.pk for user in users]).delete()
