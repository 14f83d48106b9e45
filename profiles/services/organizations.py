"""Organizations: creating, saving and locking them, and the staff user an
e-mail address names."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from config.rows import advisory_locks
from profiles.models import (
    Membership,
    Organization,
    validate_address,
    validate_timezone,
)
from profiles.selectors import user_by_email
from profiles.signals import timezone_changed


def organization_create(
    *,
    slug: str,
    name: str,
    timezone_name: str = "UTC",
    owner_email: str | None = None,
) -> Organization:
    """Create an organization and, with ``owner_email``, its owner: a staff user
    (created if missing, with an unusable password until one is set) holding the
    owner membership. All or nothing; raises ValidationError on bad input or a
    taken slug."""
    validate_timezone(timezone_name)
    org = Organization(slug=slug, name=name, timezone=timezone_name)
    org.full_clean()
    try:
        with transaction.atomic():
            org.save()
            if owner_email:
                owner = _user_for_email(owner_email)
                Membership.objects.create(user=owner, organization=org, role=Membership.Role.OWNER)
    except IntegrityError as exc:
        raise ValidationError({"slug": f"An organization with slug {slug!r} exists."}) from exc
    return org


def organizations_lock(org_ids: Iterable[object]) -> None:
    """In the caller's transaction, lock these organizations' rows in id order,
    FOR NO KEY UPDATE (which the foreign key checks of their writes pass): the
    first lock of any change to an organization's setup, so two such changes
    take their locks in one order.

    Before the rows, each organization's gate (``organization_gate_share``)
    is taken for itself: a change to the setup waits for the batches in
    flight, and the batches arriving wait for it. Every row is locked after
    its own gate, never without it: a change holding one organization's gate
    and row and waiting for another's gate would otherwise wait crosswise
    with one holding that gate and waiting for the row."""
    org_ids = sorted({i for i in org_ids if i is not None}, key=str)  # None: one being added
    advisory_locks(_gate_keys(org_ids))
    list(
        Organization.objects.select_for_update(no_key=True)
        .filter(pk__in=org_ids)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def organization_gate_share(org_id: uuid.UUID | str) -> None:
    """In the caller's transaction, as its first lock: the organization's
    gate, shared with the other batches of usage it records.

    A large batch checks its ledger rows' parents as it inserts them
    (``costs.services.ledger.ledger_keys_now``), so its rollup rows and
    budget counters stay locked only for the rest: those checks lock each
    parent FOR KEY SHARE before the shared rows. Of the organization, its
    profiles and keys, the only locks they wait for are a parent's deletion
    or a change of its unique columns (FOR UPDATE), and those come only
    from changes to the organization's setup, whose first lock
    (``organizations_lock``) takes the gate for itself: such a change never
    holds a row a batch inside the gate waits for. Without the gate a deleter
    locking a profile's rollups and counters, then the profile, would wait
    crosswise with a batch holding the profile and wanting them.

    An advisory lock of the transaction, keyed by the id (its low 64 bits);
    nothing on another database."""
    advisory_locks(_gate_keys([org_id]), shared=True)


def _gate_keys(org_ids: Iterable[object]) -> list[int]:
    """The keys of the gates of ``org_ids``, in their order: id order, the
    order their rows are locked in (a transaction taking them over several
    calls keeps it only if each call's organizations come after the last
    call's, as for rows)."""
    return list(dict.fromkeys(_gate_key(i) for i in org_ids))


def _gate_key(org_id: object) -> int:
    low = uuid.UUID(str(org_id)).int & 0xFFFF_FFFF_FFFF_FFFF
    return low - (1 << 64) if low >= 1 << 63 else low


def organization_locked(org_id: uuid.UUID | str) -> Organization:
    """``organizations_lock`` of one organization, and its row as it stands
    once locked (its time zone, which what follows may reckon periods in)."""
    organizations_lock([org_id])
    return Organization.objects.get(pk=org_id)


def organization_save(*, org: Organization) -> None:
    """Save the fields of ``org`` that changed (validated). A new time zone is
    announced (``profiles.signals.timezone_changed``) in the same transaction,
    so what follows the zone moves with it.

    An UPDATE that assigns a unique column (``slug``), even its own value,
    locks the row against the foreign key checks (FOR KEY SHARE) of every
    ingestion committing for the organization. So the row is locked FOR NO
    KEY UPDATE, which those checks pass, the announcement comes before the
    row is written (an ingestion holding a counter row the receivers lock
    must be able to commit), and only changed fields are written (an admin
    renaming the organization does not hold up its ingestions' commits)."""
    org.full_clean()
    with transaction.atomic():
        stored = organization_locked(org.pk)
        changed = [
            f.name
            for f in Organization._meta.concrete_fields
            if f.name not in _KEPT_BY_THE_DATABASE
            and getattr(stored, f.attname) != getattr(org, f.attname)
        ]
        if "timezone" in changed:
            org.__dict__.pop("tz", None)  # a cached_property of the old zone
            timezone_changed.send(sender=Organization, organization=org, previous=stored.timezone)
        if changed:
            org.save(update_fields=[*changed, "updated_at"])


# Never written from a row in hand: the key, the creation stamp, and the
# version the database's triggers keep.
_KEPT_BY_THE_DATABASE = {"id", "created_at", "updated_at", "setup_version"}


def _user_for_email(email: str):  # noqa: ANN202 - the user model is swappable
    validate_address(email)
    User = get_user_model()
    user = user_by_email(email=email)
    if user is None:
        user = User(username=email, email=email, is_staff=True)
        user.set_unusable_password()
        user.save()
    elif not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    return user
