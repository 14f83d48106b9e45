"""Profiles as usage meets them: named by events (created on first mention),
and deleted without breaking the rollups (costs knows the ledger and the
rollups; profiles, the layer below, does not)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q

from costs.models import UsageEvent
from costs.services.ledger import LedgerRow
from costs.services.rollups import rollup_fold_profiles
from profiles.models import Organization, Profile
from profiles.services import organizations_lock, profiles_named
from quotas.models import Budget, Reservation
from quotas.services import budget_rows_lock


def profiles_delete(*, profiles: Iterable[Profile]) -> int:
    """Delete ``profiles``; return how many. Their events stay in the ledger
    without a profile, so their rollup rows join their organization's rows
    without one first. Budgets scoped to them go with them."""
    profiles = list(profiles)
    ids = [p.pk for p in profiles]
    with transaction.atomic():
        # The organizations first, as every change to their setup (budgets of
        # these profiles go too); then ledger, rollups, reservations, period
        # rows and the profiles: the order ingestion and reprice lock them in
        # (the profile last, by the ledger's foreign key at commit).
        organizations_lock({p.organization_id for p in profiles})
        UsageEvent.objects.filter(profile_id__in=ids).update(profile=None)
        rollup_fold_profiles(profile_ids=ids)
        # Their reservations and budgets, and those of their keys, which go too.
        reached = Q(profile_id__in=ids) | Q(api_key__profile_id__in=ids)
        budget_rows_lock(
            budgets=Budget.objects.filter(reached), reservations=Reservation.objects.filter(reached)
        )
        deleted = Profile.objects.filter(pk__in=ids).delete()[1]
    return deleted.get(Profile._meta.label, 0)


def usage_profiles_bind(
    *,
    org: Organization,
    rows: list[LedgerRow],
    named: dict[str, str],
    found: dict[str, Profile] | None = None,
) -> dict[str, Profile]:
    """Set each ledger row's ``profile_id`` to the profile its event names
    (``named``: idempotency key -> profile name); returns the profiles by name."""
    profiles = _named_or_new(org, named, found)
    for row in rows:
        if (profile := profiles.get(named.get(row["idempotency_key"], ""))) is not None:
            row["profile_id"] = profile.pk
    return profiles


def _named_or_new(
    org: Organization, named: dict[str, str], found: dict[str, Profile] | None
) -> dict[str, Profile]:
    """Profiles by external id for ``named`` (idempotency key -> profile name),
    given those ``found`` already if the caller read them. Profiles are created
    only for keys not recorded yet, so a replay or a refused conflicting reuse
    never leaves a new profile behind."""
    names = set(named.values())
    if not names:
        return {}
    if found is None:
        found = profiles_named(org=org, names=names)
    missing = names - found.keys()
    if missing:
        taken = set(
            UsageEvent.objects.filter(
                organization=org,
                idempotency_key__in=[k for k, n in named.items() if n in missing],
            ).values_list("idempotency_key", flat=True)
        )
        missing = {n for k, n in named.items() if n in missing and k not in taken}
    if missing:
        Profile.objects.bulk_create(
            [Profile(organization=org, external_id=n) for n in sorted(missing)],
            ignore_conflicts=True,  # another request may create the same profile now
        )
        found = profiles_named(org=org, names=names)
    return found
