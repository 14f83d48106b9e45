"""Deleting a profile while its usage is being recorded: the rollups still
equal the ledger, and nothing deadlocks."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection

import costs.services.ingest as ingest_module
from costs.models import UsageEvent
from costs.services import EventInput, usage_record
from costs.services.profiles import profiles_delete
from profiles.models import Profile
from tests.costs.test_ingest import ledger_grouped, rollups_grouped

AT = datetime(2026, 11, 20, 10, tzinfo=UTC)


def _event(key: str, profile: str | None = "p1") -> EventInput:
    return EventInput(
        idempotency_key=key,
        request_hash=f"h-{key}",
        provider="acme-ai",
        model="custom-x",
        operation="chat",
        usage={"requests": 1},
        occurred_at=AT,
        cost=Decimal("0.10"),
        profile=profile,
    )


@pytest.mark.django_db(transaction=True)
def test_usage_committed_while_its_profile_is_deleted_is_folded_not_lost(tenant_a, monkeypatch):
    org = tenant_a.org
    usage_record(org=org, events=[_event("k0"), _event("n0", profile=None)])
    inside = threading.Event()
    after_charge = ingest_module._after_commit_checks

    def slow_commit(*args):  # inside the ingestion's transaction, rollup row locked
        after_charge(*args)
        inside.set()
        time.sleep(1.0)

    monkeypatch.setattr(ingest_module, "_after_commit_checks", slow_commit)
    errors: list[BaseException] = []

    def ingest() -> None:
        try:  # five events: the batch path, one transaction
            usage_record(org=org, events=[_event(f"k{i}") for i in range(1, 6)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=ingest)
    thread.start()
    assert inside.wait(10)
    profiles_delete(profiles=[Profile.objects.get(organization=org, external_id="p1")])
    thread.join()
    assert not errors, errors
    assert UsageEvent.objects.filter(organization=org).count() == 7
    assert not UsageEvent.objects.filter(organization=org, profile__isnull=False).exists()
    assert rollups_grouped(org) == ledger_grouped(org)
