"""Deleting a profile while its usage is being recorded: the rollups still
equal the ledger, and nothing deadlocks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from costs.models import UsageEvent
from costs.services import EventInput, usage_record
from costs.services.profiles import profiles_delete
from profiles.models import Profile
from tests.costs.test_ingest import ledger_grouped, rollups_grouped
from tests.quotas.helpers import ingestion_in_flight, priced_call

AT = datetime(2026, 11, 20, 10, tzinfo=UTC)


def _event(key: str, profile: str | None = "p1") -> EventInput:
    return priced_call(key, "0.10", usage={"requests": 1}, occurred_at=AT, profile=profile)


@pytest.mark.django_db(transaction=True)
def test_usage_committed_while_its_profile_is_deleted_is_folded_not_lost(tenant_a, monkeypatch):
    org = tenant_a.org
    usage_record(org=org, events=[_event("k0"), _event("n0", profile=None)])
    five = [_event(f"k{i}") for i in range(1, 6)]  # the batch path, its rollup row locked
    with ingestion_in_flight(monkeypatch, org, five):
        profiles_delete(profiles=[Profile.objects.get(organization=org, external_id="p1")])
    assert UsageEvent.objects.filter(organization=org).count() == 7
    assert not UsageEvent.objects.filter(organization=org, profile__isnull=False).exists()
    assert rollups_grouped(org) == ledger_grouped(org)
