"""Deleting profiles without breaking the rollups (costs knows the rollups;
profiles, the layer below, does not)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from costs.models import UsageEvent
from costs.services.rollups import rollup_fold_profiles
from profiles.models import Profile
from profiles.services import organizations_lock


def profiles_delete(*, profiles: Iterable[Profile]) -> int:
    """Delete ``profiles``; return how many. Their events stay in the ledger
    without a profile, so their rollup rows join their organization's rows
    without one first. Budgets scoped to them go with them."""
    profiles = list(profiles)
    ids = [p.pk for p in profiles]
    with transaction.atomic():
        # The organizations first, as every change to their setup (budgets of
        # these profiles go too); then ledger, rollups, and the profiles: the
        # order ingestion and reprice lock them in (the profile last, by the
        # ledger's foreign key at commit).
        organizations_lock({p.organization_id for p in profiles})
        UsageEvent.objects.filter(profile_id__in=ids).update(profile=None)
        rollup_fold_profiles(profile_ids=ids)
        deleted = Profile.objects.filter(pk__in=ids).delete()[1]
    return deleted.get(Profile._meta.label, 0)
