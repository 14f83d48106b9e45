"""A large batch checks its ledger rows' parents (organization, profile, key)
as it inserts them, before it locks its rollup rows and budget counters,
inside its organization's gate; a change to the organization's setup that
deletes a parent or changes its unique columns takes the gate for itself
first. So a deletion that locks the rollups and counters, then the parent,
never waits crosswise with a batch that holds the parent and wants them.

Each case pauses the change on the row the batch needs next (held by a third
transaction), starts the batch, then lets the row go: without the gate the
change and the batch deadlock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib import admin
from django.db import transaction
from django.utils import timezone

from costs.models import DailyUsage, UsageEvent
from costs.services import usage_record
from costs.services.profiles import profiles_delete
from profiles.models import ApiKey, Organization, Profile
from profiles.services import CredentialsVanished, organization_save
from quotas.models import Budget, BudgetPeriod
from quotas.reconcile import periods_reconcile
from quotas.services import budget_states_now
from tests.admin_forms import operator_post
from tests.costs.test_ingest import ledger_grouped, rollups_grouped
from tests.quotas.helpers import InBackground, priced_call, until_a_lock_wait

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 10  # more than FEW_ROWS: the batch path


def _lock_rollups_of(profile: Profile) -> None:
    list(DailyUsage.objects.select_for_update().filter(profile=profile))


def _lock_periods_of(**scope: Any) -> None:
    list(
        BudgetPeriod.objects.select_for_update(of=("self",)).filter(
            **{f"budget__{k}": v for k, v in scope.items()}
        )
    )


def _admin_delete(model: type, pk: object) -> None:
    admin.site._registry[model].delete_queryset(operator_post(), model.objects.filter(pk=pk))


def _during_a_paused_change(
    hold: Callable[[], None], change: Callable[[], None], batch: Callable[[], None]
) -> None:
    """``change`` run while a third transaction holds what ``hold`` locks; once
    the change waits for it, ``batch`` starts; once both wait, the row goes."""
    holding, go = threading.Event(), threading.Event()

    def holder() -> None:
        with transaction.atomic():
            hold()
            holding.set()
            assert go.wait(30)

    with InBackground(holder):
        assert holding.wait(30)
        with InBackground(change):
            until_a_lock_wait()
            with InBackground(batch):
                until_a_lock_wait(sessions=2)
                go.set()


def _events(prefix: str, **fields: Any) -> list[Any]:
    return [priced_call(f"{prefix}-{i}", "0.10", **fields) for i in range(BATCH)]


def test_a_profile_deleted_while_a_batch_names_it(tenant_a):
    org, doomed = tenant_a.org, tenant_a.profile
    Budget.objects.create(organization=org, name="theirs", limit=Decimal(100), profile=doomed)
    usage_record(org=org, events=_events("before", profile=doomed.external_id))

    _during_a_paused_change(
        hold=lambda: _lock_rollups_of(doomed),
        change=lambda: profiles_delete(profiles=[doomed]),
        batch=lambda: usage_record(org=org, events=_events("during", profile=doomed.external_id)),
    )

    assert not Profile.objects.filter(pk=doomed.pk).exists()
    # The batch came after the deletion: its profile, named again, is new.
    anew = Profile.objects.get(organization=org, external_id=doomed.external_id)
    during = UsageEvent.objects.filter(organization=org, idempotency_key__startswith="during-")
    assert during.count() == BATCH
    assert set(during.values_list("profile_id", flat=True)) == {anew.pk}
    assert rollups_grouped(org) == ledger_grouped(org)


def test_a_key_deleted_while_a_batch_is_recorded_with_it(tenant_a):
    org, key = tenant_a.org, tenant_a.key
    key.profile = None
    key.save(update_fields=["profile"])
    Budget.objects.create(organization=org, name="the key's", limit=Decimal(100), api_key=key)
    usage_record(org=org, events=_events("before"), api_key=key)
    refused: list[BaseException] = []

    def batch() -> None:
        try:
            usage_record(org=org, events=_events("during"), api_key=ApiKey.objects.get(pk=key.pk))
        except Exception as exc:  # the key is gone: refused whole, nothing written
            refused.append(exc)

    _during_a_paused_change(
        hold=lambda: _lock_periods_of(api_key=key),
        change=lambda: _admin_delete(ApiKey, key.pk),
        batch=batch,
    )

    assert not ApiKey.objects.filter(pk=key.pk).exists()
    assert [type(e) for e in refused] == [CredentialsVanished]
    assert not UsageEvent.objects.filter(
        organization=org, idempotency_key__startswith="during-"
    ).exists()
    assert rollups_grouped(org) == ledger_grouped(org)


def test_an_organization_renamed_into_another_zone_while_a_batch_is_recorded(tenant_a):
    org = tenant_a.org
    Budget.objects.create(organization=org, name="all", limit=Decimal(100))
    usage_record(org=org, events=_events("before"))

    def rename() -> None:
        renamed = Organization.objects.get(pk=org.pk)
        renamed.slug, renamed.timezone = "acme-renamed", "Asia/Tokyo"
        organization_save(org=renamed)

    _during_a_paused_change(
        hold=lambda: _lock_periods_of(organization=org),
        change=rename,
        batch=lambda: usage_record(org=org, events=_events("during")),
    )

    org = Organization.objects.get(pk=org.pk)
    assert (org.slug, org.timezone) == ("acme-renamed", "Asia/Tokyo")
    during = UsageEvent.objects.filter(organization=org, idempotency_key__startswith="during-")
    assert during.count() == BATCH
    # The batch read the old zone and committed after the change: its days,
    # and the periods it is charged to, are reckoned in the new one.
    tokyo = ZoneInfo("Asia/Tokyo")
    assert {e.day for e in during} == {e.occurred_at.astimezone(tokyo).date() for e in during}
    assert periods_reconcile(org=org) == []
    (current,) = budget_states_now(org, timezone.now(), open_missing=False)
    assert current.period.spent == Decimal("0.10") * BATCH * 2
    assert rollups_grouped(org) == ledger_grouped(org)


def test_a_budget_naming_a_new_profile_while_a_batch_creates_it(tenant_a, monkeypatch):
    """The budget's request takes the organization's lock (and gate) before it
    creates the profile it names: a batch inside the gate creating the same
    profile would otherwise wait for that row while the request waits for it."""
    import costs.services.ingest as ingest_module

    org = tenant_a.org
    inside, go = threading.Event(), threading.Event()
    bind = ingest_module.usage_profiles_bind

    def paused_bind(**kwargs: Any) -> Any:
        inside.set()
        assert go.wait(30)
        return bind(**kwargs)

    monkeypatch.setattr(ingest_module, "usage_profiles_bind", paused_bind)
    answers: list[Any] = []
    body = {"name": "newbie's", "limit": "5.00", "profile": "newbie"}
    with InBackground(lambda: usage_record(org=org, events=_events("b", profile="newbie"))):
        assert inside.wait(30)
        with InBackground(
            lambda: answers.append(tenant_a.client().post("/api/v1/budgets", body, format="json"))
        ):
            until_a_lock_wait()
            go.set()

    (answer,) = answers
    assert answer.status_code == 201, answer.content
    newbie = Profile.objects.get(organization=org, external_id="newbie")
    assert Budget.objects.get(organization=org, name="newbie's").profile_id == newbie.pk
    assert set(
        UsageEvent.objects.filter(organization=org).values_list("profile_id", flat=True)
    ) == {newbie.pk}


def test_a_catalog_model_is_deleted_after_the_batches_in_flight(catalog, tenant_a, monkeypatch):
    """A large batch holds the models and prices it names from its INSERT on;
    a deletion in the catalog takes the catalog's gate first, so it waits for
    the batch rather than hold prices a single event's COMMIT may wait for."""
    from costs.models import AIModel
    from tests.quotas.helpers import ingestion_in_flight

    org, doomed = tenant_a.org, AIModel.objects.get(provider__slug="openai", slug="gpt-4o")
    with ingestion_in_flight(monkeypatch, org, _events("in-flight")):
        _admin_delete(AIModel, doomed.pk)
        # Returned only once the batch had committed.
        recorded = UsageEvent.objects.filter(
            organization=org, idempotency_key__startswith="in-flight-"
        )
        assert recorded.count() == BATCH
    assert not AIModel.objects.filter(pk=doomed.pk).exists()


def test_deleting_an_organization_with_overrides_lets_other_organizations_batches_be(
    catalog, tenant_a, tenant_b, monkeypatch
):
    """Its overrides' price trigger bumps only its own organization: the
    deletion locks (and gates) only it, so another organization's batch in
    flight neither holds it up nor waits for it."""
    from costs.models import AIModel, Price
    from tests.quotas.helpers import ingestion_in_flight

    Price.objects.create(model=AIModel.objects.get(provider__slug="openai", slug="gpt-4o"),
                         organization=tenant_a.org, effective_from=timezone.now(),
                         input_tokens=Decimal("0.000001"))  # fmt: skip
    with ingestion_in_flight(monkeypatch, tenant_b.org, _events("other"), until_body_done=True):
        _admin_delete(Organization, tenant_a.org.pk)
        assert not Organization.objects.filter(pk=tenant_a.org.pk).exists()
        # The batch is still in flight: the deletion did not wait for it.
        assert not UsageEvent.objects.filter(organization=tenant_b.org).exists()
    assert UsageEvent.objects.filter(organization=tenant_b.org).count() == BATCH
