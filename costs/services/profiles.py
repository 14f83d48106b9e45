"""Deleting profiles without breaking the rollups (costs knows the rollups;
profiles, the layer below, does not)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from costs.models import UsageEvent
from costs.services.rollups import rollup_fold_profiles
from profiles.models import Profile


def profiles_delete(*, profiles: Iterable[Profile]) -> int:
    """Delete ``profiles``; return how many. Their events stay in the ledger
    without a profile, so their rollup rows join their organization's rows
    without one first. Budgets scoped to them go with them."""
    ids = [p.pk for p in profiles]
    with transaction.atomic():
        # Ledger, rollups, then the profiles: the order ingestion and reprice
        # lock them in (the profile last, by the ledger's foreign key at commit).
        UsageEvent.objects.filter(profile_id__in=ids).update(profile=None)
        rollup_fold_profiles(profile_ids=ids)
        deleted = Profile.objects.filter(pk__in=ids).delete()[1]
    return deleted.get(Profile._meta.label, 0)
