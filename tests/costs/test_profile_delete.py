"""Deleting a profile (or a key) while its usage is being recorded: the rollups still
equal the ledger, and nothing deadlocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from costs.models import UsageEvent
from costs.services import EventInput, usage_record
from costs.services.profiles import profiles_delete
from profiles.models import ApiKey, Profile
from tests.costs.test_ingest import ledger_grouped, rollups_grouped
from tests.quotas.helpers import (
    InBackground,
    ingestion_in_flight,
    priced_call,
    run_threads,
    slowed_in_other_threads,
)

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


def _event_body(key: str, profile: str) -> dict:
    return {
        "idempotency_key": key,
        "profile": profile,
        "provider": "openai",
        "model": "gpt-4o",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


def _post_event(client, key: str, profile: str):
    return client.post("/api/v1/usage", _event_body(key, profile), format="json")


# A small batch: it reads its profiles before its transaction, as a single
# event does. A large one reads them inside its organization's gate, which a
# deletion waits for (tests/costs/test_batch_gate.py).
LATE_BATCH = 5


def _post_late(client, path: str, profile: str):
    """One event "late" (the single path), or LATE_BATCH "late-<i>" in a batch."""
    if path == "single":
        return _post_event(client, "late", profile)
    events = [_event_body(f"late-{i}", profile) for i in range(LATE_BATCH)]
    return client.post("/api/v1/usage/batch", {"events": events}, format="json")


def _deleted_before_the_write(monkeypatch, path: str, delete) -> list[int]:
    """``delete()`` run once, in its own connection and committed, just before
    the events' rows are written (in a batch's case, inside its transaction,
    as an admin's deletion would); the list gets its result."""
    import costs.services.ingest as ingest_module

    write = {"single": "_record_one", "large batch": "ledger_insert_grouped"}.get(
        path, "ledger_insert"
    )
    original = getattr(ingest_module, write)
    deleted: list[int] = []

    def delete_first(*args, **kwargs):
        if not deleted:
            errors = run_threads(1, lambda _: deleted.append(delete()))
            assert not errors, errors
        return original(*args, **kwargs)

    monkeypatch.setattr(ingest_module, write, delete_first)
    return deleted


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["single", "batch"])
def test_a_profile_deleted_while_its_usage_is_recorded_is_named_anew(
    catalog, tenant_a, monkeypatch, path
):
    """The profile is looked up (or remembered), then deleted before the
    event's row is written: its foreign key refuses the row, and the event is
    recorded again for a profile of that name, created anew; never a 500."""
    from costs.services.profiles import profiles_delete

    client = tenant_a.client()
    for i in range(2):  # the profile is known, and remembered
        assert _post_event(client, f"warm-{i}", "doomed").status_code == 201
    first = Profile.objects.get(organization=tenant_a.org, external_id="doomed")
    deleted = _deleted_before_the_write(
        monkeypatch, path, lambda: profiles_delete(profiles=Profile.objects.filter(pk=first.pk))
    )
    response = _post_late(client, path, "doomed")
    assert deleted == [1]
    assert response.status_code in (200, 201), response.content
    again = Profile.objects.get(organization=tenant_a.org, external_id="doomed")
    assert again.pk != first.pk
    late = UsageEvent.objects.filter(idempotency_key__startswith="late")
    assert late.count() == (1 if path == "single" else LATE_BATCH)
    assert set(late.values_list("profile_id", flat=True)) == {again.pk}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["single", "batch"])
def test_a_key_deleted_while_its_usage_is_recorded_answers_401_and_writes_nothing(
    catalog, tenant_a, monkeypatch, path
):
    """The key authenticated the request, then an admin deleted it before the
    rows were written: their foreign key refuses them at commit, and the
    client hears that its key is gone (401), not a server error."""
    import costs.services.ingest as ingest_module

    client = tenant_a.client()
    assert _post_event(client, "warm", "p1").status_code == 201
    write = "_record_one" if path == "single" else "ledger_insert"
    original = getattr(ingest_module, write)

    def delete_first(*args, **kwargs):
        errors = run_threads(1, lambda _: ApiKey.objects.filter(pk=tenant_a.key.pk).delete())
        assert not errors, errors
        return original(*args, **kwargs)

    monkeypatch.setattr(ingest_module, write, delete_first)
    response = _post_late(client, path, "p1")
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "unauthenticated"
    assert response["WWW-Authenticate"] == "Bearer"
    assert not ApiKey.objects.filter(pk=tenant_a.key.pk).exists()
    assert not UsageEvent.objects.filter(idempotency_key__startswith="late").exists()
    assert UsageEvent.objects.filter(idempotency_key="warm").get().api_key_id is None


@pytest.mark.django_db(transaction=True)
def test_a_profile_deleted_while_a_reservation_is_taken_for_it_is_named_anew(
    catalog, tenant_a, monkeypatch
):
    """The reservation's row refers to the profile remembered at the key
    lookup's version, deleted since: not a limiter failure (a degraded answer
    or a 503), but the reservation taken for the name, created anew."""
    import costs.services.preflight as preflight_module
    from costs.services.profiles import profiles_delete
    from quotas.models import Reservation
    from tests.quotas.helpers import check

    client = tenant_a.client()
    for _ in range(2):  # the profile is known, and remembered
        assert check(client, profile="doomed", reserve=True).status_code == 200
    first = Profile.objects.get(organization=tenant_a.org, external_id="doomed")
    original = preflight_module.quota_check
    deleted: list[int] = []

    def delete_first(**kwargs):
        if not deleted:
            errors = run_threads(
                1,
                lambda _: deleted.append(
                    profiles_delete(profiles=Profile.objects.filter(pk=first.pk))
                ),
            )
            assert not errors, errors
        return original(**kwargs)

    monkeypatch.setattr(preflight_module, "quota_check", delete_first)
    response = check(client, profile="doomed", reserve=True)
    assert deleted == [1]
    body = response.json()
    assert response.status_code == 200, body
    assert body["allowed"] is True and "degraded" not in body
    again = Profile.objects.get(organization=tenant_a.org, external_id="doomed")
    assert Reservation.objects.get(pk=body["reservation_id"]).profile_id == again.pk != first.pk


@pytest.mark.django_db(transaction=True)
def test_a_key_deleted_while_a_reservation_is_taken_answers_401_and_holds_nothing(
    catalog, tenant_a, monkeypatch
):
    """The key authenticated the check, then an admin deleted it before the
    reservation's rows were written: their foreign key refuses them, and the
    client hears that its key is gone (401), not a degraded answer."""
    import costs.services.preflight as preflight_module
    from quotas.models import Reservation
    from tests.quotas.helpers import check

    client = tenant_a.client()
    assert check(client, profile="p1", reserve=True).status_code == 200
    held = set(Reservation.objects.values_list("pk", flat=True))
    original = preflight_module.quota_check

    def delete_first(**kwargs):
        errors = run_threads(1, lambda _: ApiKey.objects.filter(pk=tenant_a.key.pk).delete())
        assert not errors, errors
        return original(**kwargs)

    monkeypatch.setattr(preflight_module, "quota_check", delete_first)
    response = check(client, profile="p1", reserve=True)
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "unauthenticated"
    assert response["WWW-Authenticate"] == "Bearer"
    assert not ApiKey.objects.filter(pk=tenant_a.key.pk).exists()
    assert set(Reservation.objects.values_list("pk", flat=True)) <= held


@pytest.mark.django_db(transaction=True)
def test_a_profile_saved_in_the_admin_while_it_is_deleted_neither_deadlocks_nor_comes_back(
    tenant_a, monkeypatch
):
    """The deletion holds the organization; the admin's save must wait for it
    there, not lock the profile first (its rename or switch-off bumps the
    organization's version), and must not insert the deleted profile again."""

    from django.contrib.admin.sites import site
    from django.contrib.messages.storage.fallback import FallbackStorage
    from django.test import RequestFactory

    import costs.services.profiles as profile_deletion
    from profiles.services import organizations_lock

    profile = Profile.objects.create(organization=tenant_a.org, external_id="doomed")
    # The deletion holds the organization a second before deleting the profile.
    slowed = slowed_in_other_threads(organizations_lock)
    monkeypatch.setattr(profile_deletion, "organizations_lock", slowed)
    deleting = InBackground(lambda: profiles_delete(profiles=[profile]))
    assert slowed.taken.wait(30)
    request = RequestFactory().post("/")
    request.session = {}
    request._messages = FallbackStorage(request)
    changed = Profile.objects.get(pk=profile.pk)
    changed.active = False
    site._registry[Profile].save_model(request, changed, None, True)
    deleting.join()
    assert not Profile.objects.filter(pk=profile.pk).exists()
    assert [str(m) for m in request._messages] == [
        "This profile was deleted meanwhile; nothing was saved."
    ]


@pytest.mark.django_db(transaction=True)
def test_a_profile_deleted_in_the_middle_of_a_batch_does_not_deadlock_with_it(
    tenant_a, monkeypatch
):
    """A deletion starting after a batch wrote its ledger rows, and before it
    wrote their rollups: it locks the profile's rollups and counters, and the
    profile last. The batch takes its lock on the profile (the ledger's
    foreign key) at COMMIT, after its rollups and counters, in the same order:
    one waits for the other, neither deadlocks, and nothing is lost. (Checked
    at the INSERT, the key took the profile first, and the two deadlocked.)"""
    import time

    import costs.services.ingest as ingest_module

    org = tenant_a.org
    usage_record(org=org, events=[_event(f"warm-{i}", "doomed") for i in range(3)])
    doomed = Profile.objects.get(organization=org, external_id="doomed")
    original = ingest_module.budget_charge_plan
    deletion: list[InBackground] = []

    def plan_then_let_the_deletion_in(*args, **kwargs):
        # After the ledger INSERT, before the rollups: the deletion starts and
        # gets as far as it can meanwhile.
        if not deletion:
            deletion.append(InBackground(lambda: profiles_delete(profiles=[doomed])))
            time.sleep(1.0)
        return original(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "budget_charge_plan", plan_then_let_the_deletion_in)
    results = usage_record(org=org, events=[_event(f"late-{i}", "doomed") for i in range(9)])
    deletion[0].join(timeout=30)  # fails with the deletion's error (a deadlock), if any
    assert [r.status for r in results] == [201] * 9
    assert UsageEvent.objects.filter(idempotency_key__startswith="late").count() == 9
    assert not Profile.objects.filter(pk=doomed.pk).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["single", "batch", "large batch"])
def test_an_override_deleted_as_its_first_use_is_recorded_prices_it_again(
    catalog, tenant_a, monkeypatch, path
):
    """The events were priced with the organization's override, which an
    admin deleted (unused, so allowed) before their rows were written: the
    price's foreign key refuses them, and they are priced again from the
    catalog as it stands, never a server error."""
    from decimal import Decimal

    from django.utils import timezone

    from costs.models import AIModel, Price

    gpt4o = AIModel.objects.get(provider__slug="openai", slug="gpt-4o")
    override = Price.objects.create(model=gpt4o, organization=tenant_a.org,
                                    effective_from=timezone.now() - timedelta(days=1),
                                    input_tokens=Decimal("0.000001"))  # fmt: skip
    deleted = _deleted_before_the_write(
        monkeypatch, path, lambda: Price.objects.filter(pk=override.pk).delete()[0]
    )
    client = tenant_a.client()
    if path == "single":
        response = _post_event(client, "late", "p1")
    else:
        count = LATE_BATCH if path == "batch" else 12
        events = [_event_body(f"late-{i}", "p1") for i in range(count)]
        response = client.post("/api/v1/usage/batch", {"events": events}, format="json")
    assert deleted == [1]
    assert response.status_code in (200, 201), response.content
    late = UsageEvent.objects.filter(idempotency_key__startswith="late")
    assert late.count() == {"single": 1, "batch": LATE_BATCH, "large batch": 12}[path]
    global_price = Price.objects.get(model=gpt4o, organization__isnull=True)
    assert set(late.values_list("price_id", flat=True)) == {global_price.pk}


@pytest.mark.django_db(transaction=True)
def test_a_large_batch_priced_again_after_a_new_time_zone_is_reckoned_in_it(
    catalog, tenant_a, monkeypatch
):
    """The override a large batch was priced with is deleted before its rows
    are written, and a time zone change waits for the batch's gate: the
    batch is priced again, passes the gate after the change, and is
    reckoned in the new zone (days and periods); never a server error."""
    from decimal import Decimal
    from zoneinfo import ZoneInfo

    from django.utils import timezone

    import costs.services.ingest as ingest_module
    from costs.models import AIModel, Price
    from profiles.models import Organization
    from profiles.services import organization_save
    from quotas.models import Budget
    from quotas.reconcile import periods_reconcile
    from tests.quotas.helpers import until_a_lock_wait

    org = tenant_a.org
    Budget.objects.create(organization=org, name="all", limit=Decimal(100))
    gpt4o = AIModel.objects.get(provider__slug="openai", slug="gpt-4o")
    override = Price.objects.create(model=gpt4o, organization=org,
                                    effective_from=timezone.now() - timedelta(days=1),
                                    input_tokens=Decimal("0.000001"))  # fmt: skip
    original = ingest_module.ledger_insert_grouped
    changes: list[InBackground] = []

    def to_tokyo() -> None:
        moved = Organization.objects.get(pk=org.pk)
        moved.timezone = "Asia/Tokyo"
        organization_save(org=moved)

    def meanwhile(*args, **kwargs):
        if not changes:
            assert run_threads(1, lambda _: Price.objects.filter(pk=override.pk).delete()) == []
            changes.append(InBackground(to_tokyo))  # waits for the batch's gate
            assert run_threads(1, lambda _: until_a_lock_wait()) == []
        return original(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "ledger_insert_grouped", meanwhile)
    events = [_event_body(f"late-{i}", "p1") for i in range(12)]
    response = tenant_a.client().post("/api/v1/usage/batch", {"events": events}, format="json")
    changes[0].join()

    assert response.status_code == 200, response.content
    assert [r["status"] for r in response.json()["results"]] == [201] * 12
    late = UsageEvent.objects.filter(idempotency_key__startswith="late")
    global_price = Price.objects.get(model=gpt4o, organization__isnull=True)
    assert set(late.values_list("price_id", flat=True)) == {global_price.pk}
    tokyo = ZoneInfo("Asia/Tokyo")
    assert {e.day for e in late} == {e.occurred_at.astimezone(tokyo).date() for e in late}
    assert periods_reconcile(org=Organization.objects.get(pk=org.pk)) == []
