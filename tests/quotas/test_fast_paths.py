"""The pre-flight check's hand-written reads and the one-statement reservation
answer exactly what the ORM paths answer, and survive budgets changing under them."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import timezone as timezone_of
from decimal import Decimal

import pytest
import time_machine
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.rows import (
    IN_LIST_MAX,
    Read,
    RowReader,
    fetch,
    in_list,
    pg_array,
    read,
    read_together,
)
from costs.models import Price
from costs.selectors.catalog import model_resolve, price_book, price_book_read
from profiles.models import ApiKey, Organization, Profile
from profiles.services import (
    profile_get_or_create,
    profiles_named,
    profiles_named_read,
)
from profiles.services.keys import _key_by_prefix
from quotas.models import Budget, BudgetPeriod, Reservation, ReservationHold
from quotas.selectors import overview_budget_states
from quotas.services import (
    Charge,
    Dimensions,
    LimiterUnavailable,
    budget_charge_apply,
    budget_charge_plan,
    budget_create,
    budget_matches,
    budget_states_now,
    budget_states_read,
    budget_update,
    current_states,
    quota_check,
    reservations_purge,
)
from quotas.services.limiter import _reserve, _reserve_orm
from tests.quotas.helpers import utc

NOW = utc(2026, 11, 20, 12)
DIMS = Dimensions(None, None, "openai", "gpt-4o", "chat")


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def _budgets(org: Organization) -> list[Budget]:
    specs = [
        ("money", "cost", "monthly", "block", "1.00"),
        ("tokens", "total_tokens", "daily", "block", "1000"),
        ("weekly", "requests", "weekly", "warn", "5"),
        ("forever", "requests", "total", "block", "3"),
    ]
    return [
        budget_create(org=org, name=n, metric=m, period=p, action=a, limit=Decimal(lim))
        for n, m, p, a, lim in specs
    ]


@pytest.mark.django_db
def test_budget_states_now_reads_what_current_states_reads(tenant_a, frozen):
    org = tenant_a.org
    org.timezone = "America/Los_Angeles"
    org.save()
    _budgets(org)
    inactive = budget_create(org=org, name="off", limit=Decimal(9))
    Budget.objects.filter(pk=inactive.pk).update(active=False)
    BudgetPeriod.objects.filter(budget__name="tokens").update(
        spent=Decimal("12.5"), reserved=Decimal(3)
    )
    orm = current_states(org, Budget.objects.filter(organization=org, active=True), NOW)
    fast = budget_states_now(org, NOW)
    assert [s.budget.pk for s in fast] == [s.budget.pk for s in orm]
    for a, b in zip(fast, orm, strict=True):
        for field in ("name", "metric", "period", "action", "limit", "thresholds", "profile_id"):
            assert getattr(a.budget, field) == getattr(b.budget, field)
        assert (a.period.pk, a.period.start, a.period.end) == (
            b.period.pk,
            b.period.start,
            b.period.end,
        )
        assert (a.period.spent, a.period.reserved) == (b.period.spent, b.period.reserved)
        assert isinstance(a.period.spent, Decimal) and isinstance(a.budget.limit, Decimal)
    tokens = next(s for s in fast if s.budget.name == "tokens")
    assert tokens.period.spent == Decimal("12.5")
    # Los Angeles' day, not UTC's.
    assert tokens.period.start == utc(2026, 11, 20, 8)


@pytest.mark.django_db
def test_a_read_of_a_new_period_writes_nothing_and_a_reservation_opens_it(tenant_a, frozen):
    org = tenant_a.org
    _budgets(org)
    later = NOW + timedelta(days=1)  # a new day: the daily budget has no row for it
    before = BudgetPeriod.objects.count()
    states = budget_states_now(org, later, open_missing=False)
    tokens = next(s for s in states if s.budget.name == "tokens")
    assert tokens.period.pk is None and tokens.period.spent == 0
    assert BudgetPeriod.objects.count() == before
    budget_states_now(org, later)
    assert BudgetPeriod.objects.count() == before + 1


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["one statement", "orm"])
def test_a_limit_lowered_after_the_read_is_the_one_the_reservation_meets(tenant_a, frozen, path):
    org = tenant_a.org
    budget = budget_create(org=org, name="money", limit=Decimal("1.00"))
    states = budget_states_now(org, NOW, open_missing=False, matching=[DIMS])
    budget_update(budget=Budget.objects.get(pk=budget.pk), limit=Decimal("0.10"))
    amounts = {"cost": Decimal("0.50")}
    if path == "orm":  # SQLite's path
        reservation = Reservation(id=uuid.uuid4(), organization=org, expires_at=NOW, estimate={})
        result = _reserve_orm(org, reservation, states, amounts, NOW)
    else:
        result = quota_check(org=org, dims=DIMS, amounts=amounts, reserve=True, states=states)
    assert not result.allowed
    assert BudgetPeriod.objects.get(budget=budget).reserved == 0
    assert not Reservation.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "amounts", "allowed", "reserved"),
    [
        # dollars are not requests: the hold is one request, as it counts now
        ({"metric": "requests", "limit": Decimal(10)}, {"cost": Decimal("0.50"), "requests": 1},
         True, 1),
        ({"action": "warn"}, {"cost": Decimal("5")}, True, 0),  # warns now: no hold, no refusal
        ({"active": False}, {"cost": Decimal("5")}, True, 0),
    ],
    ids=["metric", "action", "switched-off"],
)  # fmt: skip
def test_a_budget_changed_after_the_read_is_held_as_it_stands(
    tenant_a, frozen, change, amounts, allowed, reserved
):
    org = tenant_a.org
    budget = budget_create(org=org, name="money", limit=Decimal("1.00"))
    states = budget_states_now(org, NOW, open_missing=False, matching=[DIMS])
    budget_update(budget=Budget.objects.get(pk=budget.pk), **change)
    result = quota_check(org=org, dims=DIMS, amounts=amounts, reserve=True, states=states)
    assert result.allowed is allowed
    assert BudgetPeriod.objects.get(budget=budget).reserved == reserved


@pytest.mark.django_db
def test_the_one_statement_reservation_holds_all_or_none(tenant_a, frozen):
    org = tenant_a.org
    _budgets(org)
    amounts = {"cost": Decimal("0.25"), "requests": 1, "total_tokens": 100}
    results = [quota_check(org=org, dims=DIMS, amounts=amounts, reserve=True) for _ in range(4)]
    # "forever" allows 3 requests: the 4th is refused, by it alone ($1.00 still fits).
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [s.budget.name for s in results[3].denied] == ["forever"]
    held = Reservation.objects.filter(organization=org)
    assert held.count() == 3
    # One hold per block budget (not the warn one) per reservation.
    assert ReservationHold.objects.filter(reservation__in=held).count() == 9
    periods = {p.budget.name: p for p in BudgetPeriod.objects.select_related("budget")}
    assert periods["money"].reserved == Decimal("0.75")
    assert periods["tokens"].reserved == 300
    assert periods["forever"].reserved == 3
    assert periods["weekly"].reserved == 0
    # The refused call's answer shows the counters as they stood.
    denied = results[3].states
    assert {s.budget.name: s.period.reserved for s in denied}["money"] == Decimal("0.75")
    reservation = results[0].reservation
    stored = Reservation.objects.get(pk=reservation.pk)
    assert stored.status == "held" and stored.expires_at == NOW + timedelta(seconds=300)
    assert stored.estimate == {"cost": "0.25", "requests": "1", "total_tokens": "100"}


@pytest.mark.django_db
def test_a_budget_deleted_after_the_read_is_not_held_and_nothing_breaks(tenant_a, frozen):
    org = tenant_a.org
    _budgets(org)
    states = [s for s in budget_states_now(org, NOW)]
    Budget.objects.filter(organization=org, name="forever").delete()
    amounts = {"cost": Decimal("0.10"), "requests": 1, "total_tokens": 10}
    result = _reserve(org, DIMS, states, amounts, 60, NOW)
    assert result.allowed
    holds = ReservationHold.objects.filter(reservation_id=result.reservation.pk)
    assert sorted(h.period.budget.name for h in holds) == ["money", "tokens"]


@pytest.mark.django_db
def test_the_orm_reservation_for_sqlite_agrees(tenant_a, frozen):
    org = tenant_a.org
    _budgets(org)
    amounts = {"cost": Decimal("0.25"), "requests": 1, "total_tokens": 100}
    answers = []
    for _ in range(4):
        reservation = Reservation(
            id=uuid.uuid4(),
            organization=org,
            expires_at=NOW + timedelta(seconds=60),
            estimate={},
        )
        states = budget_states_now(org, NOW)
        answers.append(_reserve_orm(org, reservation, states, amounts, NOW))
    assert [r.allowed for r in answers] == [True, True, True, False]
    assert [s.budget.name for s in answers[3].denied] == ["forever"]
    assert BudgetPeriod.objects.get(budget__name="money").reserved == Decimal("0.75")
    assert Reservation.objects.filter(organization=org).count() == 3


@pytest.mark.django_db
def test_row_reader_builds_what_the_orm_builds(tenant_a, tenant_b, catalog):
    key = _key_by_prefix(tenant_a.key.prefix)
    orm = ApiKey.objects.select_related("organization", "profile").get(pk=tenant_a.key.pk)
    for field in ApiKey._meta.concrete_fields:
        assert getattr(key, field.attname) == getattr(orm, field.attname), field.name
    for field in Organization._meta.concrete_fields:
        assert getattr(key.organization, field.attname) == getattr(orm.organization, field.attname)
    assert key.scopes == orm.scopes and isinstance(key.scopes, list)
    assert key.profile is None and _key_by_prefix("nope") is None

    profile = profile_get_or_create(org=tenant_a.org, external_id=tenant_a.profile.external_id)
    assert profile.pk == tenant_a.profile.pk and profile.created_at == tenant_a.profile.created_at
    created = profile_get_or_create(org=tenant_a.org, external_id="someone-new")
    assert Profile.objects.get(pk=created.pk).external_id == "someone-new"

    resolved = model_resolve(provider="openai", model="gpt-4o")
    own = Price.objects.create(
        model_id=resolved.id,
        organization=tenant_a.org,
        effective_from=timezone.now() - timedelta(days=1),
        input_tokens=Decimal("1.25"),
        output_tokens=Decimal(5),
        tiers=[{"threshold": 1000, "rates": {"input_tokens": "2.5"}}],
    )
    book = price_book(org=tenant_a.org, model_ids=[resolved.id])
    row = book.at(resolved.id, timezone.now())
    assert row.id == own.pk and row.organization_id == tenant_a.org.pk
    assert row.rates.rates["input_tokens"] == Decimal("1.25")
    assert row.rates.tiers[0].rates == {"input_tokens": Decimal("2.5")}
    # Another tenant never sees it.
    other = tenant_b.org
    assert (
        price_book(org=other, model_ids=[resolved.id]).at(resolved.id, timezone.now()).id != own.pk
    )
    reader = RowReader(Price)
    assert reader.width == len(Price._meta.concrete_fields)


@pytest.mark.django_db
def test_a_reservation_opens_only_the_periods_of_budgets_it_matches(tenant_a, frozen):
    org = tenant_a.org
    _budgets(org)
    other = budget_create(org=org, name="anthropic only", provider="anthropic", limit=Decimal(5))
    later = NOW + timedelta(days=40)  # a new month, week and day: no period is open yet
    result = quota_check(
        org=org, dims=DIMS, amounts={"cost": Decimal("0.01")}, reserve=True, now=later
    )
    assert result.allowed
    opened = BudgetPeriod.objects.filter(start__gt=NOW)
    assert sorted(p.budget.name for p in opened) == ["money", "tokens", "weekly"]
    assert not opened.filter(budget=other).exists()


@pytest.mark.django_db
def test_a_charge_on_a_period_deleted_meanwhile_is_skipped_not_a_crash(tenant_a, frozen):
    org = tenant_a.org
    _budgets(org)
    charge = Charge(dims=DIMS, occurred_at=NOW, amounts={"cost": Decimal("0.10"), "requests": 1})
    plan = budget_charge_plan(org=org, charges=[charge])
    Budget.objects.filter(organization=org, name="money").delete()
    states = budget_charge_apply(plan)
    assert BudgetPeriod.objects.get(budget__name="forever").spent == 1
    assert "money" in {s.budget.name for s in states}  # reported as read, nothing written


def _hold_table_lock(locked: threading.Event, done: threading.Event) -> None:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {BudgetPeriod._meta.db_table} IN SHARE MODE")
            locked.set()
            done.wait(timeout=30)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_opening_a_period_is_bounded_by_the_lock_timeout_which_is_then_put_back(tenant_a, settings):
    settings.QUOTA_LOCK_TIMEOUT_MS = 300
    org = tenant_a.org
    _budgets(org)
    later = timezone.now() + timedelta(days=40)  # no period of that month, week or day yet
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '7s'")
    locked, done = threading.Event(), threading.Event()
    locker = threading.Thread(target=_hold_table_lock, args=(locked, done), daemon=True)
    locker.start()
    try:
        assert locked.wait(timeout=10)
        started = time.monotonic()
        with pytest.raises(LimiterUnavailable):
            quota_check(
                org=org, dims=DIMS, amounts={"cost": Decimal("0.01")}, reserve=True, now=later
            )
        elapsed = time.monotonic() - started
    finally:
        done.set()
        locker.join(timeout=10)
    assert elapsed < 3, elapsed  # about 300 ms, not 7 s
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "7s"  # the session's own setting is back
    assert not Reservation.objects.filter(organization=org).exists()
    assert quota_check(
        org=org, dims=DIMS, amounts={"cost": Decimal("0.01")}, reserve=True, now=later
    ).allowed


@pytest.mark.django_db
@pytest.mark.parametrize("count", [1, IN_LIST_MAX, IN_LIST_MAX + 1, 60])
def test_profiles_named_finds_exactly_the_named_ones_whatever_their_number(tenant_a, count):
    org = tenant_a.org
    Profile.objects.bulk_create(
        [Profile(organization=org, external_id=f"p-{i}") for i in range(count + 5)]
    )
    names = [f"p-{i}" for i in range(count)] + ["nobody"]

    found = profiles_named(org=org, names=names)

    assert set(found) == {f"p-{i}" for i in range(count)}
    assert all(p.organization_id == org.pk for p in found.values())
    sql, params = in_list("x", names)
    # A few values as a list of parameters; more as one array, one statement text.
    assert ("ANY" in sql) == (len(names) > IN_LIST_MAX)
    assert len(params) == (1 if len(names) > IN_LIST_MAX else len(names))


def test_fetch_runs_like_a_django_cursor(tenant_a):
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(wrapper):
        assert fetch("SELECT %s::int + 1", [41]) == [(42,)]
    assert seen == ["SELECT %s::int + 1"]
    assert [q["sql"] for q in captured.captured_queries] == ["SELECT %s::int + 1"]
    with pytest.raises(DataError):
        fetch("SELECT 1 / %s::int", [0])


@pytest.mark.parametrize(
    ("values", "element_type"),
    [
        ([uuid.uuid4(), None, uuid.UUID(int=0), uuid.uuid4()], "uuid"),
        ([None, None], "uuid"),
        ([uuid.uuid4()] * 3, "uuid"),
        ([], "uuid"),
        ([Decimal("0.000000000001"), None, Decimal("-12.5")], "numeric(24,12)"),
        (['a "quoted", {braced} \\ one', "NULL", None, ""], "text"),
        ([1, 2**40, None], "bigint"),
        ([2**70, -1], "numeric"),  # past orjson's ints: the text path
        ([True, None, False], "boolean"),
        ([date(2026, 12, 7), None, date(2000, 1, 1)], "date"),
        (
            [
                datetime(2026, 12, 7, 21, 36, 1, 705154, tzinfo=UTC),
                datetime(2026, 12, 7, 21, 36, tzinfo=UTC),
                None,
                datetime(2026, 12, 8, 3, 6, 1, tzinfo=timezone_of(timedelta(hours=5, minutes=30))),
            ],
            "timestamptz",
        ),
    ],
)
def test_pg_array_reads_back_as_the_values_it_was_made_of(db, values, element_type):
    ((back,),) = fetch(f"SELECT %s::{element_type}[]", [pg_array(values)])
    assert back == values


@pytest.mark.django_db
def test_ended_reservations_are_purged_after_the_retention_and_held_ones_never(tenant_a, settings):
    settings.RESERVATION_RETENTION_DAYS = 7
    org = tenant_a.org
    budget_create(org=org, name="money", limit=Decimal(100))
    amounts = {"cost": Decimal("0.10")}
    made = [quota_check(org=org, dims=DIMS, amounts=amounts, reserve=True) for _ in range(4)]
    old, recent, held_old, released = (r.reservation.pk for r in made)
    long_ago = timezone.now() - timedelta(days=8)
    Reservation.objects.filter(pk=old).update(status="settled", ended_at=long_ago)
    Reservation.objects.filter(pk=recent).update(
        status="settled", ended_at=timezone.now() - timedelta(days=6)
    )
    Reservation.objects.filter(pk=held_old).update(created_at=long_ago)  # still held
    Reservation.objects.filter(pk=released).update(status="released", ended_at=long_ago)
    reserved_before = BudgetPeriod.objects.get(budget__name="money").reserved

    assert reservations_purge(batch=1) == 2
    assert set(Reservation.objects.values_list("pk", flat=True)) == {recent, held_old}
    assert not ReservationHold.objects.filter(reservation_id__in=[old, released]).exists()
    assert ReservationHold.objects.filter(reservation_id=held_old).count() == 1
    # Counters are not the purge's business.
    assert BudgetPeriod.objects.get(budget__name="money").reserved == reserved_before
    assert reservations_purge() == 0


@pytest.mark.django_db
def test_the_read_filtered_in_sql_agrees_with_budget_matches(tenant_a, frozen):
    org = tenant_a.org
    other_profile = Profile.objects.create(organization=org, external_id="someone-else")
    key = tenant_a.key
    specs = [
        {},
        {"profile": tenant_a.profile},
        {"profile": other_profile},
        {"api_key": key},
        {"provider": "openai"},
        {"provider": "anthropic"},
        {"provider": "openai", "model": "gpt-4o"},
        {"model": "gpt-4o-mini"},
        {"operation": "chat"},
        {"operation": "embed", "profile": tenant_a.profile},
    ]
    for i, spec in enumerate(specs):
        budget_create(org=org, name=f"b{i}", limit=Decimal(10), **spec)
    everything = budget_states_now(org, NOW, open_missing=False)
    cases = [
        Dimensions(tenant_a.profile.pk, key.pk, "openai", "gpt-4o", "chat"),
        Dimensions(None, None, "openai", "gpt-4o-mini", "default"),
        Dimensions(other_profile.pk, key.pk, "anthropic", "claude-sonnet-4-5", "embed"),
        Dimensions(tenant_a.profile.pk, None, "google", "gemini-2.5-pro", "embed"),
    ]
    for dims in cases:
        expected = [s.budget.name for s in everything if budget_matches(s.budget, dims)]
        read = budget_states_now(org, NOW, open_missing=False, matching=[dims])
        assert [s.budget.name for s in read] == expected, dims
    # Several dimensions at once: a superset of what each matches, never less.
    union = {s.budget.name for s in budget_states_now(org, NOW, matching=cases)}
    for dims in cases:
        assert {s.budget.name for s in everything if budget_matches(s.budget, dims)} <= union


def test_a_profile_named_in_the_read_matches_as_its_id_would(tenant_a, frozen):
    org = tenant_a.org
    other_profile = Profile.objects.create(organization=org, external_id="someone-else")
    budget_create(org=org, name="mine", limit=Decimal(10), profile=tenant_a.profile)
    budget_create(org=org, name="theirs", limit=Decimal(10), profile=other_profile)
    budget_create(org=org, name="shared", limit=Decimal(10))
    budget_create(org=org, name="mine-chat", limit=Decimal(10), profile=tenant_a.profile,
                  operation="chat")  # fmt: skip
    unnamed = Dimensions(None, None, "openai", "gpt-4o", "default")

    def names(profile_names: list[str]) -> list[str]:
        states = read(
            budget_states_read(
                org, NOW, open_missing=False, matching=[unnamed], profile_names=profile_names
            )
        )
        return sorted(s.budget.name for s in states)

    by_id = budget_states_now(
        org, NOW, open_missing=False,
        matching=[Dimensions(tenant_a.profile.pk, None, "openai", "gpt-4o", "default")],
    )  # fmt: skip
    assert names([tenant_a.profile.external_id]) == sorted(s.budget.name for s in by_id)
    assert names([tenant_a.profile.external_id]) == ["mine", "shared"]
    assert names(["nobody-yet"]) == ["shared"]
    assert names([]) == ["shared"]
    # Another tenant's profile of the same name is not this tenant's.
    Profile.objects.create(organization=Organization.objects.create(slug="x", name="X"),
                           external_id="twin")  # fmt: skip
    assert names(["twin"]) == ["shared"]


def test_reads_sent_together_load_what_each_loads_alone(tenant_a, tenant_b, catalog, frozen):
    org = tenant_a.org
    for i in range(3):
        Profile.objects.create(organization=org, external_id=f"p{i}")
    Profile.objects.create(organization=tenant_b.org, external_id="p0")
    for i in range(4):
        budget_create(org=org, name=f"b{i}", limit=Decimal(10 + i))
    models = [model_resolve(provider="openai", model=m).id for m in ("gpt-4o", "gpt-4o-mini")]
    reads = [
        lambda: price_book_read(org=org, model_ids=models),
        lambda: profiles_named_read(org=org, names=["p0", "p2", "absent"]),
        lambda: Read.nothing("nothing asked"),
        lambda: budget_states_read(org, NOW, open_missing=False),
        lambda: profiles_named_read(org=org, names=["absent"]),  # no rows
    ]
    alone = [read(r()) for r in reads]
    with CaptureQueriesContext(connection) as captured:
        together = read_together(*(r() for r in reads))

    assert len(captured.captured_queries) == 1
    book_alone, book_together = alone[0], together[0]
    for model_id in models:
        assert book_together.at(model_id, NOW) == book_alone.at(model_id, NOW) is not None
    assert sorted(together[1]) == sorted(alone[1]) == ["p0", "p2"]
    assert {p.pk for p in together[1].values()} == {p.pk for p in alone[1].values()}
    assert together[2] == "nothing asked"
    assert [(s.budget.pk, s.budget.limit, s.period.spent) for s in together[3]] == [
        (s.budget.pk, s.budget.limit, s.period.spent) for s in alone[3]
    ]
    assert len(together[3]) == 4
    assert together[4] == {}


@pytest.mark.django_db
def test_overviews_show_shared_budgets_and_the_profile_budgets_nearest_their_limits(
    tenant_a, frozen, api_a
):
    org = tenant_a.org
    budget_create(org=org, name="Org monthly", limit=Decimal(1000))
    budget_create(org=org, name="OpenAI monthly", provider="openai", limit=Decimal(500))
    for i in range(30):
        profile = Profile.objects.create(organization=org, external_id=f"user-{i:02d}")
        budget = budget_create(org=org, name=f"User {i:02d}", profile=profile, limit=Decimal(100))
        # user-i has used i% of its budget (half spent, half reserved for the odd ones).
        spent, reserved = (Decimal(i), Decimal(0)) if i % 2 == 0 else (Decimal(i) / 2,) * 2
        BudgetPeriod.objects.filter(budget=budget).update(spent=spent, reserved=reserved)
    inactive = budget_create(org=org, name="Old", limit=Decimal(1))
    Budget.objects.filter(pk=inactive.pk).update(active=False)

    names = [s.budget.name for s in overview_budget_states(org=org)]
    nearest = [f"User {i:02d}" for i in range(29, 9, -1)]  # the 20 most used: 29% .. 10%
    assert sorted(names) == names
    assert set(names) == {"Org monthly", "OpenAI monthly", *nearest}
    body = api_a.get("/api/v1/dashboard").json()
    assert [b["name"] for b in body["budgets"]] == names
