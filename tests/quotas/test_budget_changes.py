"""Changing a budget keeps its counter equal to the ledger: switched off and on
again, re-scoped while a charge is being committed, or given another kind of
period that starts at the same instant."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection

from costs.services import usage_record
from quotas.models import Budget, BudgetPeriod, Reservation
from quotas.periods import period_bounds
from quotas.services import budget_create, budget_update, quota_check
from quotas.spend import spend_between
from tests.quotas.helpers import (
    BUDGETS_URL,
    CHECK_URL,
    InBackground,
    ingestion_in_flight,
    post_json,
    priced_call,
    priced_call_dims,
    slowed_in_other_threads,
)

DIMS = priced_call_dims()


_event = priced_call


def _counter(budget) -> BudgetPeriod:
    return BudgetPeriod.objects.get(budget=budget)


@pytest.mark.django_db
def test_a_budget_switched_back_on_counts_what_it_missed_while_off(tenant_a):
    org = tenant_a.org
    budget = budget_create(org=org, name="Cap", limit=Decimal("1.00"))
    usage_record(org=org, events=[_event("k1")])
    budget_update(budget=budget, active=False)
    usage_record(org=org, events=[_event("k2"), _event("k3"), _event("k4")])
    assert _counter(budget).spent == Decimal("0.30")  # charges skip an inactive budget
    budget_update(budget=budget, active=True)
    assert _counter(budget).spent == Decimal("1.20")
    refused = quota_check(org=org, dims=DIMS, amounts={"cost": Decimal("0.50")}, reserve=True)
    assert not refused.allowed


@pytest.mark.django_db(transaction=True)
def test_a_recount_waits_for_a_charge_being_committed_instead_of_overwriting_it(
    tenant_a, monkeypatch
):
    org = tenant_a.org
    budget = budget_create(org=org, name="Cap", limit=Decimal("10.00"))
    usage_record(org=org, events=[_event("k0")])
    nine = [_event(f"k{i}", "0.10") for i in range(1, 10)]  # the batch path, one transaction
    with ingestion_in_flight(monkeypatch, org, nine):
        budget_update(budget=budget, provider="acme-ai")  # re-scoped: recounted from the ledger
    period = _counter(budget)
    assert period.spent == spend_between(budget, period.start, period.end) == Decimal("1.20")


@pytest.mark.django_db(transaction=True)
def test_a_budget_created_while_an_ingestion_is_in_flight_is_settled_after_it(
    tenant_a, monkeypatch
):
    from quotas.services import BUDGET_SETTLE_SECONDS
    from quotas.tasks import reconcile_counters

    org = tenant_a.org
    queued: list[dict] = []
    monkeypatch.setattr(reconcile_counters, "apply_async", lambda **options: queued.append(options))
    # A few events: read ahead, outside the organization's gate.
    five = [_event(f"k{i}", "0.10") for i in range(5)]
    with ingestion_in_flight(monkeypatch, org, five, until_body_done=True):
        budget = budget_create(org=org, name="Cap", limit=Decimal("1.00"))
    period = _counter(budget)
    ledger = spend_between(budget, period.start, period.end)
    # The budget opened from the ledger before the five events were committed,
    # and the ingestion had read the budgets before the budget existed.
    assert (period.spent, ledger) == (0, Decimal("0.50"))
    # Its creation queued a settling for once ingestions in flight are done.
    (options,) = queued
    assert options["countdown"] == BUDGET_SETTLE_SECONDS
    assert options["kwargs"]["budget_ids"] == [str(budget.pk)]
    reconcile_counters(**options["kwargs"])
    assert _counter(budget).spent == Decimal("0.50")


@pytest.mark.django_db(transaction=True)
def test_a_budget_created_while_a_large_batch_is_in_flight_waits_and_counts_it(
    tenant_a, monkeypatch
):
    """A batch of more than a few events holds its organization's gate, which
    a change to the setup takes for itself: the budget opens after it, from a
    ledger that holds its events."""
    org = tenant_a.org
    with ingestion_in_flight(monkeypatch, org, [_event(f"k{i}", "0.10") for i in range(9)]):
        budget = budget_create(org=org, name="Cap", limit=Decimal("1.00"))
    period = _counter(budget)
    assert period.spent == spend_between(budget, period.start, period.end) == Decimal("0.90")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", [{"operation": "chat"}, {"metric": "requests", "limit": 10}])
def test_a_change_just_after_midnight_and_a_settle_across_it_do_not_deadlock(
    tenant_a, monkeypatch, change
):
    """The change opens today's period (its insert locks the row) while a
    settle locks yesterday's row, where its hold is, then charges today's: the
    change must not take yesterday's row after today's."""
    import quotas.services.budgets as services  # where a budget change opens its period

    org = tenant_a.org
    budget = budget_create(org=org, name="Cap", period="daily", limit=Decimal("10"))
    with time_machine.travel(datetime(2026, 12, 1, 23, 59, 50, tzinfo=UTC), tick=False):
        held = quota_check(org=org, dims=DIMS, amounts={"cost": Decimal("0.50")}, reserve=True)
    assert held.allowed
    opened = threading.Event()
    main = threading.get_ident()
    open_period = services.period_ensure

    def slow_open(*args, **kwargs):
        opened_here = open_period(*args, **kwargs)
        if threading.get_ident() == main and not opened.is_set():
            opened.set()
            time.sleep(1.0)  # the settle now holds yesterday's row, waiting on today's
        return opened_here

    monkeypatch.setattr(services, "period_ensure", slow_open)
    errors: list[BaseException] = []

    def settle() -> None:
        try:
            assert opened.wait(10)
            event = _event("k1", "0.40", reservation_id=held.reservation.pk)
            usage_record(org=org, events=[event])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    with time_machine.travel(datetime(2026, 12, 2, 0, 0, 5, tzinfo=UTC), tick=False):
        thread = threading.Thread(target=settle)
        thread.start()
        budget_update(budget=budget, **change)
        thread.join()
    assert not errors, errors
    assert Reservation.objects.get(pk=held.reservation.pk).status == Reservation.Status.SETTLED


@pytest.mark.django_db
@pytest.mark.parametrize("held_before_the_change", [False, True])
def test_a_new_kind_of_period_starting_at_the_same_instant_gets_its_own_end(
    tenant_a, held_before_the_change
):
    """Daily to monthly on the 1st: both start at the same instant, so the
    row is reused. It gets the new kind's end, and a hold taken before the
    change (stored under the old kind's key) or after it is settled by the
    charge, which is not lost."""
    org = tenant_a.org

    def hold():
        return quota_check(org=org, dims=DIMS, amounts={"cost": Decimal("0.50")}, reserve=True)

    with time_machine.travel(datetime(2026, 12, 1, 12, tzinfo=UTC), tick=False):
        budget = budget_create(org=org, name="Cap", period="daily", limit=Decimal("1.00"))
        assert _counter(budget).end == datetime(2026, 12, 2, tzinfo=UTC)
        held = hold() if held_before_the_change else None
        budget_update(budget=budget, period="monthly")  # both start on Dec 1, 00:00 UTC
        assert _counter(budget).end == datetime(2027, 1, 1, tzinfo=UTC)
        held = held or hold()
        assert held.allowed
        usage_record(org=org, events=[_event("k1", "0.40", reservation_id=held.reservation.pk)])
    period = _counter(budget)
    assert (period.spent, period.reserved) == (Decimal("0.40"), Decimal(0))
    assert Reservation.objects.get(pk=held.reservation.pk).status == Reservation.Status.SETTLED


@pytest.mark.django_db
def test_holds_move_to_the_new_kind_of_period_and_still_count(tenant_a):
    org = tenant_a.org
    with time_machine.travel(datetime(2026, 11, 18, 12, tzinfo=UTC), tick=False):
        budget = budget_create(org=org, name="Cap", period="daily", limit=Decimal("1.00"))
        held = quota_check(org=org, dims=DIMS, amounts={"cost": Decimal("0.75")}, reserve=True)
        daily = _counter(budget)
        budget_update(budget=budget, period="monthly")  # starts Nov 1, not today
        monthly = BudgetPeriod.objects.get(budget=budget, start=datetime(2026, 11, 1, tzinfo=UTC))
        assert (monthly.reserved, BudgetPeriod.objects.get(pk=daily.pk).reserved) == (
            Decimal("0.75"),
            0,
        )
        # The hold still counts: 0.75 + 0.50 would pass the limit.
        refused = quota_check(org=org, dims=DIMS, amounts={"cost": Decimal("0.50")}, reserve=True)
        assert not refused.allowed
        usage_record(org=org, events=[_event("k1", "0.40", reservation_id=held.reservation.pk)])
    monthly.refresh_from_db()
    assert (monthly.spent, monthly.reserved) == (Decimal("0.40"), 0)


@pytest.mark.django_db
def test_a_new_metric_lets_go_of_holds_taken_in_the_old_one(tenant_a):
    org = tenant_a.org
    money = budget_create(org=org, name="Cap", limit=Decimal("1.00"))
    other = budget_create(org=org, name="Other", limit=Decimal("5.00"))
    held = quota_check(org=org, dims=DIMS, amounts={"cost": Decimal("0.75")}, reserve=True)
    assert held.allowed
    budget_update(budget=money, metric="requests", limit=Decimal(10))
    # 0.75 dollars are not 0.75 requests: the hold on this budget is gone...
    assert _counter(money).reserved == 0
    assert (_counter(money).spent, _counter(other).reserved) == (0, Decimal("0.75"))
    # ...and the reservation settles on its other budget alone.
    usage_record(org=org, events=[_event("k1", "0.50", reservation_id=held.reservation.pk)])
    assert (_counter(money).spent, _counter(money).reserved) == (1, 0)
    assert (_counter(other).spent, _counter(other).reserved) == (Decimal("0.50"), 0)


@pytest.mark.django_db
def test_a_budgets_provider_matches_whatever_its_case(tenant_a):
    client = tenant_a.client()
    created = post_json(
        client, BUDGETS_URL, {"name": "Cap", "provider": " OpenAI ", "limit": "0.01"}
    )
    assert created.status_code == 201, created.content
    assert created.json()["provider"] == "openai"
    response = post_json(
        client,
        CHECK_URL,
        {"provider": "OpenAI", "model": "custom-x", "estimate": {"cost": "5.00"}, "reserve": True},
    )
    assert response.status_code == 402, response.content
    assert [b["name"] for b in response.json()["budgets"]] == ["Cap"]


@pytest.mark.django_db
@pytest.mark.parametrize("through", ["service", "admin"])
def test_a_new_time_zone_moves_each_budgets_period_and_its_holds(tenant_a, through):
    """Asia/Tokyo's November starts 9 hours before UTC's: the budget's
    November is reckoned again (a charge of UTC's October 31st evening is
    Tokyo's November 1st), and the hold taken in UTC's November still counts."""
    from django.contrib.admin.sites import site
    from django.test import RequestFactory

    from profiles.models import Organization
    from profiles.services import organization_save

    org = Organization.objects.get(pk=tenant_a.org.pk)
    with time_machine.travel(datetime(2026, 11, 18, 12, tzinfo=UTC), tick=False):
        budget = budget_create(org=org, name="Cap", limit=Decimal("1.00"))
        forever = budget_create(org=org, name="Forever", period="total", limit=Decimal("9"))
        late_october = datetime(2026, 10, 31, 20, tzinfo=UTC)
        usage_record(org=org, events=[_event("oct", "0.30", occurred_at=late_october)])
        held = quota_check(org=org, dims=DIMS, amounts={"cost": Decimal("0.50")}, reserve=True)
        assert held.allowed
        org.timezone = "Asia/Tokyo"
        if through == "service":
            organization_save(org=org)
        else:
            admin = site._registry[Organization]
            admin.save_model(RequestFactory().post("/"), org, None, True)
        tokyo = BudgetPeriod.objects.get(
            budget=budget, start=datetime(2026, 10, 31, 15, tzinfo=UTC)
        )
        utc = BudgetPeriod.objects.get(budget=budget, start=datetime(2026, 11, 1, tzinfo=UTC))
        assert (tokyo.spent, tokyo.reserved) == (Decimal("0.30"), Decimal("0.50"))
        assert utc.reserved == 0
        # 0.30 spent + 0.50 held + 0.30 would pass the limit.
        refused = quota_check(org=org, dims=DIMS, amounts={"cost": Decimal("0.30")}, reserve=True)
        assert not refused.allowed
        usage_record(org=org, events=[_event("k1", "0.40", reservation_id=held.reservation.pk)])
    tokyo.refresh_from_db()
    assert (tokyo.spent, tokyo.reserved) == (Decimal("0.70"), 0)
    # A total budget has one period whatever the zone.
    assert BudgetPeriod.objects.filter(budget=forever).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_new_time_zone_waits_for_a_charge_being_committed_and_counts_it(tenant_a, monkeypatch):
    from profiles.models import Organization
    from profiles.services import organization_save

    org = Organization.objects.get(pk=tenant_a.org.pk)
    budget = budget_create(org=org, name="Cap", period="daily", limit=Decimal("10.00"))
    usage_record(org=org, events=[_event("k0")])
    nine = [_event(f"k{i}", "0.10") for i in range(1, 10)]  # the batch path, one transaction
    with ingestion_in_flight(monkeypatch, org, nine):
        org.timezone = "Pacific/Kiritimati"  # UTC+14: today began at another instant
        organization_save(org=org)
    (state,) = [p for p in BudgetPeriod.objects.filter(budget=budget) if p.start.hour == 10]
    assert state.spent == spend_between(budget, state.start, state.end) == Decimal("1.20")


@pytest.mark.django_db
def test_after_a_new_time_zone_reconciliation_finds_no_drift_on_the_old_rows(tenant_a):
    """The rows reckoned in the old zone end at the change: reconciliation,
    which recounts every open row, does not find them drifting (and alert)
    as charges go to the new rows."""
    from profiles.models import Organization
    from profiles.services import organization_save
    from quotas.reconcile import periods_reconcile

    org = Organization.objects.get(pk=tenant_a.org.pk)
    with time_machine.travel(datetime(2026, 11, 18, 12, tzinfo=UTC), tick=False):
        budget = budget_create(org=org, name="Cap", limit=Decimal("10.00"))
        usage_record(org=org, events=[_event("before")])
        assert periods_reconcile(org=org) == []
        org.timezone = "Asia/Tokyo"
        organization_save(org=org)
        usage_record(org=org, events=[_event("after")])
        assert periods_reconcile(org=org) == []
    utc, tokyo = BudgetPeriod.objects.filter(budget=budget).order_by("-start")
    assert utc.end == datetime(2026, 11, 18, 12, tzinfo=UTC)  # ended at the change
    assert (tokyo.spent, utc.spent) == (Decimal("0.60"), Decimal("0.30"))


@pytest.mark.django_db
def test_a_reservation_read_before_a_new_time_zone_holds_on_the_new_period(tenant_a):
    """It read the old zone's row (the change committed before its
    statement ran): the statement finds that row ended, and the reservation
    reads again, in the new zone, and holds where reservations now look."""
    from profiles.models import Organization
    from profiles.services import organization_save
    from quotas.services import budget_states_now

    org = Organization.objects.get(pk=tenant_a.org.pk)
    with time_machine.travel(datetime(2026, 11, 18, 12, tzinfo=UTC), tick=False):
        budget = budget_create(org=org, name="Cap", limit=Decimal("1.00"))
        quota_check(org=org, dims=DIMS, amounts={"cost": Decimal("0.50")}, reserve=True)
        read_before = budget_states_now(org, datetime.now(UTC), matching=[DIMS])
        changed = Organization.objects.get(pk=org.pk)
        changed.timezone = "Asia/Tokyo"
        organization_save(org=changed)
        late = quota_check(
            org=org, dims=DIMS, amounts={"cost": Decimal("0.30")}, reserve=True, states=read_before
        )
        assert late.allowed
        # Both holds where reservations look now: 0.50 + 0.30 + 0.30 > 1.00.
        refused = quota_check(
            org=changed, dims=DIMS, amounts={"cost": Decimal("0.30")}, reserve=True
        )
        assert not refused.allowed
    utc, tokyo = BudgetPeriod.objects.filter(budget=budget).order_by("-start")
    assert (tokyo.reserved, utc.reserved) == (Decimal("0.80"), 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deletion", ["budget", "key in the admin"])
def test_a_new_time_zone_and_a_budget_deleted_meanwhile_do_not_deadlock(
    tenant_a, monkeypatch, deletion
):
    """The time zone change holds the organization's row while it locks the
    budgets' periods; a budget's deletion (itself, or with the key it is
    for) must not take the periods first and then wait for that row (its
    triggers bump the organization's version)."""
    from django.contrib.admin.sites import site
    from django.test import RequestFactory

    import quotas.services as quota_services
    from profiles.models import ApiKey, Organization
    from profiles.services import organization_save
    from quotas.models import Budget
    from quotas.services import budget_delete
    from tests.factories import make_key

    org = Organization.objects.get(pk=tenant_a.org.pk)
    key, _ = make_key(org, name="doomed")
    keep = budget_create(org=org, name="Keep", period="daily", limit=Decimal("10.00"))
    gone = budget_create(org=org, name="Gone", period="daily", limit=Decimal("10.00"), api_key=key)
    rezone = quota_services.budgets_rezone

    def delete():
        if deletion == "budget":
            budget_delete(budget=gone)
        else:
            site._registry[ApiKey].delete_model(RequestFactory().post("/"), key)

    deletions: list[InBackground] = []

    def rezone_while_deleting(*, org, previous):
        deletions.append(InBackground(delete))
        time.sleep(0.5)  # the deletion gets as far as it can meanwhile
        rezone(org=org, previous=previous)

    monkeypatch.setattr(quota_services, "budgets_rezone", rezone_while_deleting)
    org.timezone = "Pacific/Kiritimati"
    organization_save(org=org)
    (deleting,) = deletions
    deleting.join()
    assert list(Budget.objects.filter(organization=org)) == [keep]
    assert BudgetPeriod.objects.filter(budget=keep, start__hour=10).exists()


def _budgets_of_every_scope(org, key, profiles, copies: int) -> list:
    """Budgets of each kind of period and scope, ``copies`` of each."""
    specs = []
    for i in range(copies):
        for period in ("daily", "weekly", "monthly"):
            specs += [
                {"name": f"org-{period}-{i}", "period": period},
                {"name": f"req-{period}-{i}", "period": period, "metric": "requests"},
                {"name": f"model-{period}-{i}", "period": period, "model": "custom-x"},
                {"name": f"other-{period}-{i}", "period": period, "provider": "elsewhere"},
                {"name": f"key-{period}-{i}", "period": period, "api_key": key},
            ]
            specs += [
                {"name": f"{p.external_id}-{period}-{i}", "period": period, "profile": p}
                for p in profiles
            ]
    limits = {"requests": Decimal(1000)}
    return [
        budget_create(org=org, limit=limits.get(s.get("metric", ""), Decimal(100)), **s)
        for s in specs
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("copies", [1, 4])
def test_a_new_time_zone_recounts_every_budget_in_a_fixed_number_of_statements(tenant_a, copies):
    """However many budgets, the change takes the same statements, and each
    budget's new period holds what the ledger says of it, in the new zone."""
    from django.test.utils import CaptureQueriesContext

    from profiles.models import Organization
    from profiles.services import organization_save
    from tests.factories import ProfileFactory, make_key

    org = Organization.objects.get(pk=tenant_a.org.pk)
    with time_machine.travel(datetime(2026, 11, 18, 12, tzinfo=UTC), tick=False):
        key, _ = make_key(org, name="scoped")
        profiles = [ProfileFactory(organization=org, external_id=f"p{i}") for i in range(3)]
        budgets = _budgets_of_every_scope(org, key, profiles, copies)
        events = []
        for i, hours in enumerate([1, 5, 10, 20, 30, 200, 400]):
            at = datetime(2026, 11, 18, 12, tzinfo=UTC) - timedelta(hours=hours)
            events.append(_event(f"e{i}", f"0.{i + 1}0", occurred_at=at))
        usage_record(org=org, events=events)
        for i, profile in enumerate(profiles):
            events = [
                _event(f"p{i}-{j}", "0.05", profile=profile.external_id) for j in range(i + 1)
            ]
            usage_record(org=org, events=events, api_key=key if i == 0 else None)
        held = quota_check(org=org, dims=DIMS, amounts={"cost": Decimal("0.25")}, reserve=True)
        assert held.allowed
        org.timezone = "America/Los_Angeles"
        with CaptureQueriesContext(connection) as captured:
            organization_save(org=org)
        now = datetime(2026, 11, 18, 12, tzinfo=UTC)
        for budget in budgets:
            start, end = period_bounds(budget.period, org.tz, now)
            period = BudgetPeriod.objects.get(budget=budget, start=start)
            assert period.end == end
            assert period.spent == spend_between(budget, start, end), budget.name
            expected_hold = Decimal("0.25") if budget.name.startswith(("org-", "model-")) else 0
            assert period.reserved == expected_hold, budget.name
            stale = BudgetPeriod.objects.filter(budget=budget, start__lte=now, end__gt=now)
            assert list(stale) == [period], budget.name
    statements = [q for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) <= 20, [q["sql"][:80] for q in statements]


@pytest.mark.django_db
def test_a_budget_off_during_a_new_time_zone_ends_its_old_row_when_back_on(tenant_a):
    from profiles.models import Organization
    from profiles.services import organization_save
    from quotas.reconcile import periods_reconcile

    org = Organization.objects.get(pk=tenant_a.org.pk)
    with time_machine.travel(datetime(2026, 11, 18, 12, tzinfo=UTC), tick=False):
        budget = budget_create(org=org, name="Cap", limit=Decimal("10.00"))
        usage_record(org=org, events=[_event("before")])
        budget_update(budget=budget, active=False)
        org.timezone = "Asia/Tokyo"
        organization_save(org=org)
        budget = Budget.objects.get(pk=budget.pk)
        budget_update(budget=budget, active=True)
        usage_record(org=org, events=[_event("after")])
        assert periods_reconcile(org=org) == []
        now = datetime(2026, 11, 18, 12, tzinfo=UTC)
        (open_row,) = BudgetPeriod.objects.filter(budget=budget, start__lte=now, end__gt=now)
    assert (open_row.start, open_row.spent) == (
        datetime(2026, 10, 31, 15, tzinfo=UTC),
        Decimal("0.60"),
    )


@pytest.mark.django_db
def test_a_reservation_with_the_old_zone_in_hand_after_the_change_holds_on_the_new_period(
    tenant_a,
):
    """Its key lookup read the organization before the change, its read of
    the budgets came after: the old row it finds ended at the change, which
    is not where its period ends, so it reads again in the zone in force."""
    from profiles.models import Organization
    from profiles.services import organization_save

    stale = Organization.objects.get(pk=tenant_a.org.pk)
    with time_machine.travel(datetime(2026, 11, 18, 12, tzinfo=UTC), tick=False):
        budget = budget_create(org=stale, name="Cap", limit=Decimal("1.00"))
        held = quota_check(org=stale, dims=DIMS, amounts={"cost": Decimal("0.50")}, reserve=True)
        assert held.allowed
        changed = Organization.objects.get(pk=stale.pk)
        changed.timezone = "Asia/Tokyo"
        organization_save(org=changed)
    with time_machine.travel(datetime(2026, 11, 18, 12, 0, 1, tzinfo=UTC), tick=False):
        late = quota_check(org=stale, dims=DIMS, amounts={"cost": Decimal("0.60")}, reserve=True)
    assert not late.allowed  # 0.50 held + 0.60 > 1.00
    rows = {p.start.day: p.reserved for p in BudgetPeriod.objects.filter(budget=budget)}
    assert rows == {31: Decimal("0.50"), 1: 0}


@pytest.mark.django_db(transaction=True)
def test_a_reconciliation_and_a_budget_change_do_not_deadlock(tenant_a, monkeypatch):
    """The change holds the budget's row and then locks its periods; the
    reconciliation locks a period and must not then wait for the budget's row."""
    import quotas.services.budgets as quota_services
    from quotas.reconcile import periods_reconcile

    org = tenant_a.org
    budget = budget_create(org=org, name="Cap", limit=Decimal("10.00"))
    usage_record(org=org, events=[_event("k1")])
    reset = quota_services._period_reset

    def slow_reset(*args, **kwargs):
        time.sleep(1)  # the budget's row is updated; its periods not locked yet
        return reset(*args, **kwargs)

    monkeypatch.setattr(quota_services, "_period_reset", slow_reset)
    with InBackground(lambda: budget_update(budget=budget, limit=Decimal("20.00"))):
        time.sleep(0.3)
        periods_reconcile(org=org, budget_ids=[budget.pk])
    assert Budget.objects.get(pk=budget.pk).limit == Decimal("20.00")


@pytest.mark.django_db(transaction=True)
def test_a_budget_change_waiting_on_its_deletion_is_a_not_found_not_a_deadlock(
    tenant_a, monkeypatch
):
    import quotas.services.budgets as quota_services
    from profiles.services import organizations_lock
    from quotas.services import budget_delete

    org = tenant_a.org
    budget = budget_create(org=org, name="Cap", limit=Decimal("10.00"))
    # The deletion holds the organization a second before deleting the budget.
    slowed = slowed_in_other_threads(organizations_lock)
    monkeypatch.setattr(quota_services, "organizations_lock", slowed)
    with InBackground(lambda: budget_delete(budget=budget)):
        assert slowed.taken.wait(30)
        with pytest.raises(Budget.DoesNotExist):
            budget_update(budget=Budget.objects.get(pk=budget.pk), limit=Decimal("50.00"))
    assert not Budget.objects.filter(pk=budget.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("before", "after"), [("UTC", "Africa/Abidjan"), ("Europe/Paris", "Europe/Berlin")]
)
def test_a_new_time_zone_that_moves_no_period_leaves_the_rows_alone(tenant_a, before, after):
    """Same bounds, same rows: writers still reckoning in the old zone may be
    opening those very rows, which the change must not lock out of order."""
    from django.test.utils import CaptureQueriesContext

    from profiles.models import Organization
    from profiles.services import organization_save

    org = Organization.objects.get(pk=tenant_a.org.pk)
    org.timezone = before
    organization_save(org=org)
    for period in ("daily", "weekly", "monthly"):
        budget_create(org=org, name=period, period=period, limit=Decimal("10.00"))
    usage_record(org=org, events=[_event("k1")])
    rows = list(BudgetPeriod.objects.order_by("pk").values_list("pk", "start", "end", "spent"))
    org.timezone = after
    with CaptureQueriesContext(connection) as captured:
        organization_save(org=org)
    assert not [q for q in captured.captured_queries if BudgetPeriod._meta.db_table in q["sql"]]
    assert (
        list(BudgetPeriod.objects.order_by("pk").values_list("pk", "start", "end", "spent")) == rows
    )


@pytest.mark.django_db
@pytest.mark.parametrize("meanwhile", ["ended", "deleted"])
def test_a_reconciliation_skips_a_period_ended_or_deleted_after_it_listed_them(
    tenant_a, monkeypatch, meanwhile
):
    import quotas.reconcile as reconcile_module
    from quotas.reconcile import periods_reconcile

    org = tenant_a.org
    first = budget_create(org=org, name="A", limit=Decimal("10.00"))
    second = budget_create(org=org, name="B", limit=Decimal("10.00"))
    usage_record(org=org, events=[_event("k1")])
    ordered = sorted([first, second], key=lambda b: str(b.pk))
    spend = reconcile_module.spend_between
    done: list[bool] = []

    def change_the_other(budget, start, end):
        if not done:  # while the first period is recounted
            done.append(True)
            other = ordered[1]
            if meanwhile == "ended":
                BudgetPeriod.objects.filter(budget=other).update(end=start + timedelta(hours=1))
            else:
                Budget.objects.filter(pk=other.pk).delete()
        return spend(budget, start, end)

    monkeypatch.setattr(reconcile_module, "spend_between", change_the_other)
    assert periods_reconcile(org=org) == []


@pytest.mark.django_db(transaction=True)
def test_daily_to_monthly_mid_month_and_a_writer_opening_the_1st_do_not_deadlock(tenant_a):
    """The month's row starts before today's: the change opens it before it
    locks today's, the writers' (start) order, while a writer that opened the
    1st's row (a late event) waits to charge today's."""
    from tests.quotas.helpers import deleted_while_held

    first, today = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC)
    with time_machine.travel(datetime(2026, 12, 7, 12, tzinfo=UTC), tick=False):
        budget = budget_create(org=tenant_a.org, name="Cap", period="daily", limit=Decimal("10"))
        todays = BudgetPeriod.objects.get(budget=budget, start=today)

        def open_the_first() -> None:
            BudgetPeriod.objects.create(budget=budget, start=first, end=first + timedelta(days=1),
                                        spent=Decimal(0), reserved=Decimal(0), opened_at=first)  # fmt: skip

        deleted_while_held(
            open_the_first,
            lambda: list(BudgetPeriod.objects.select_for_update().filter(pk=todays.pk)),
            lambda: budget_update(budget=Budget.objects.get(pk=budget.pk), period="monthly"),
        )
    month = BudgetPeriod.objects.get(budget=budget, start=first)
    assert month.end == datetime(2027, 1, 1, tzinfo=UTC)
    assert BudgetPeriod.objects.get(pk=todays.pk).end == datetime(2026, 12, 7, 12, tzinfo=UTC)
