"""The setup memo (profiles.setup): a single event and a reservation read
nothing ahead once their organization's setup is known, and every change to
that setup (budgets, periods, prices, profiles, time zone) is seen by the very
next request, because the database bumps the organization's setup version in
the same transaction."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from costs.models import Price, UsageEvent
from costs.services.profiles import profiles_delete
from profiles.models import Organization, Profile
from profiles.setup import setup_memo, setup_memo_clear
from quotas.models import Budget, BudgetPeriod
from quotas.services import budget_create, budget_delete, budget_update
from tests.costs.test_ingest import copy_price, global_price
from tests.quotas.helpers import GPT4O_CALL_COST, check, dec, ingest, status_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]


def _version(org: Organization) -> int:
    return Organization.objects.values_list("setup_version", flat=True).get(pk=org.pk)


def _queries(call):
    with CaptureQueriesContext(connection) as captured:
        response = call()
    assert response.status_code in (200, 201), response.content
    # The test's transaction adds savepoints, which autocommit does not have.
    statements = [q for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
    return response, len(statements)


def _money(org, name: str, limit: str, **fields) -> Budget:
    return budget_create(org=org, name=name, limit=Decimal(limit), **fields)


def test_warm_requests_read_nothing_ahead_and_report_every_budget(tenant_a):
    """Once known, a single event is the key lookup and its one statement, a
    reservation too; and both still report every budget's counters, those
    they add nothing to (an images count, a warn budget) included."""
    org, client = tenant_a.org, tenant_a.client()
    _money(org, "money", "10")
    _money(org, "watch", "0.03", action="warn")
    budget_create(org=org, name="images", metric="images", limit=Decimal(5))
    for i in range(2):  # learn the profile, the prices, the budgets, the periods
        ingest(client, f"warm-{i}", profile="u1")
        check(client, profile="u1", reserve=True)

    response, queries = _queries(lambda: ingest(client, "e1", profile="u1"))
    assert queries == 2
    body = response.json()
    assert dec(status_of(body, "money")["spent"]) == 3 * GPT4O_CALL_COST
    assert dec(status_of(body, "images")["spent"]) == 0
    assert dec(status_of(body, "watch")["spent"]) == 3 * GPT4O_CALL_COST

    response, queries = _queries(lambda: check(client, profile="u1", reserve=True))
    assert queries == 2
    body = response.json()
    assert body["allowed"] is True
    money = status_of(body, "money")
    assert dec(money["spent"]) == 3 * GPT4O_CALL_COST
    assert dec(money["reserved"]) == 3 * GPT4O_CALL_COST  # two warm holds and this one
    # The warn budget holds nothing and is read, not locked: over its limit, it lets it pass.
    assert dec(status_of(body, "watch")["reserved"]) == 0
    assert dec(status_of(body, "watch")["spent"]) == 3 * GPT4O_CALL_COST
    assert dec(status_of(body, "images")["spent"]) == 0


def test_a_budget_created_is_enforced_by_the_next_reservation(tenant_a):
    org, client = tenant_a.org, tenant_a.client()
    _money(org, "big", "10")
    for _ in range(2):
        assert check(client, reserve=True).json()["allowed"] is True
    before = _version(org)
    _money(org, "tight", "0.01")
    assert _version(org) > before
    response = check(client, reserve=True)
    assert response.status_code == 402
    assert [b["name"] for b in response.json()["details"]["budgets"]] == ["big", "tight"] or {
        b["name"] for b in response.json()["budgets"]
    } == {"big", "tight"}


def test_a_budget_created_is_charged_by_the_next_event(tenant_a):
    org, client = tenant_a.org, tenant_a.client()
    _money(org, "first", "10")
    for i in range(2):
        ingest(client, f"w{i}")
    second = _money(org, "second", "10")  # opens with the month's two events
    body = ingest(client, "after").json()
    assert dec(status_of(body, "second")["spent"]) == 3 * GPT4O_CALL_COST
    assert BudgetPeriod.objects.get(budget=second).spent == 3 * GPT4O_CALL_COST


@pytest.mark.parametrize("change", ["deactivate", "delete", "rescope"])
def test_a_budget_switched_off_deleted_or_rescoped_stops_counting(tenant_a, change):
    org, client = tenant_a.org, tenant_a.client()
    keep = _money(org, "keep", "10")
    gone = _money(org, "gone", "10")
    for i in range(2):
        ingest(client, f"w{i}")
        check(client, reserve=True)
    if change == "deactivate":
        budget_update(budget=gone, active=False)
    elif change == "delete":
        budget_delete(budget=gone)
    else:
        budget_update(budget=gone, model="gpt-4o-mini")
    before = {p.pk: p.spent for p in BudgetPeriod.objects.filter(budget_id=gone.pk)}
    body = ingest(client, "after").json()
    assert [b["name"] for b in body["budgets"]] == ["keep"]
    answer = check(client, reserve=True).json()
    assert [b["name"] for b in answer["budgets"]] == ["keep"]
    assert BudgetPeriod.objects.get(budget=keep).spent == 3 * GPT4O_CALL_COST
    assert {p.pk: p.spent for p in BudgetPeriod.objects.filter(budget_id=gone.pk)} == before


def test_a_new_price_prices_the_next_event(tenant_a):
    client = tenant_a.client()
    for i in range(2):
        ingest(client, f"w{i}")
    old = global_price("openai", "gpt-4o")
    others = tenant_a.org.setup_version
    doubled = copy_price(
        old,
        input_tokens=old.input_tokens * 2,
        output_tokens=old.output_tokens * 2,
        effective_from=timezone.now() - timedelta(seconds=1),
    )
    body = ingest(client, "after").json()
    assert dec(body["cost"]) == 2 * GPT4O_CALL_COST
    assert body["price_id"] == str(doubled.pk)
    # A catalog price is every organization's: all of them moved on.
    assert _version(tenant_a.org) > others
    assert not Organization.objects.filter(setup_version=0).exists()


def test_an_override_moves_only_its_organization_on(tenant_a, tenant_b):
    """A catalog price is every organization's; an override is its own
    organization's alone: the others' setup (and their memos) stay."""
    a, b = _version(tenant_a.org), _version(tenant_b.org)
    override = copy_price(global_price("openai", "gpt-4o"), organization=tenant_a.org,
                          effective_from=timezone.now() - timedelta(seconds=1))  # fmt: skip
    assert (_version(tenant_a.org), _version(tenant_b.org)) == (a + 1, b)
    Price.objects.filter(pk=override.pk).update(source="edited")
    Price.objects.filter(pk=override.pk).delete()
    assert (_version(tenant_a.org), _version(tenant_b.org)) == (a + 3, b)
    Price.objects.filter(pk=global_price("openai", "gpt-4o").pk).update(source="edited")
    assert (_version(tenant_a.org), _version(tenant_b.org)) == (a + 4, b + 1)


def test_a_price_edited_in_place_prices_the_next_event(tenant_a):
    client = tenant_a.client()
    for i in range(2):
        ingest(client, f"w{i}")
    price = global_price("openai", "gpt-4o")
    Price.objects.filter(pk=price.pk).update(
        input_tokens=price.input_tokens * 2, output_tokens=price.output_tokens * 2
    )
    assert dec(ingest(client, "after").json()["cost"]) == 2 * GPT4O_CALL_COST


def test_a_profile_deleted_is_created_again_by_the_next_event(tenant_a):
    org, client = tenant_a.org, tenant_a.client()
    _money(org, "money", "10")
    for i in range(2):
        ingest(client, f"w{i}", profile="p1")
    first = Profile.objects.get(organization=org, external_id="p1")
    profiles_delete(profiles=Profile.objects.filter(pk=first.pk))
    response = ingest(client, "after", profile="p1")
    assert response.status_code == 201, response.content
    again = Profile.objects.get(organization=org, external_id="p1")
    assert again.pk != first.pk
    assert UsageEvent.objects.get(idempotency_key="after").profile_id == again.pk


def test_a_profile_budget_follows_a_rename(tenant_a):
    """A budget for a profile applies to the name the profile has now."""
    org, client = tenant_a.org, tenant_a.client()
    ingest(client, "w0", profile="old-name")
    profile = Profile.objects.get(organization=org, external_id="old-name")
    _money(org, "theirs", "0.01", profile=profile)
    for _ in range(2):  # learn the name
        assert check(client, profile="old-name", reserve=True).status_code == 402
    profile.external_id = "new-name"
    profile.save()
    refused = check(client, profile="new-name", reserve=True)
    assert refused.status_code == 402
    assert check(client, profile="old-name", reserve=True).status_code == 200


def test_the_version_never_goes_down_and_a_time_zone_change_bumps_it(tenant_a):
    org = tenant_a.org
    stale = Organization.objects.get(pk=org.pk)
    _money(org, "money", "10")
    bumped = _version(org)
    assert bumped > stale.setup_version
    stale.name = "Renamed with a stale row in hand"
    stale.save()
    assert _version(org) == bumped
    stale.timezone = "Asia/Tokyo"
    stale.save()
    assert _version(org) == bumped + 1


def test_a_period_row_deleted_bumps_its_organization(tenant_a):
    budget = _money(tenant_a.org, "money", "10")
    before = _version(tenant_a.org)
    BudgetPeriod.objects.filter(budget=budget).delete()
    assert _version(tenant_a.org) == before + 1


def test_only_the_version_read_is_trusted(tenant_a):
    """A row read before a newer version was remembered gets no memo; each
    organization has its own."""
    setup_memo_clear()
    org = Organization.objects.get(pk=tenant_a.org.pk)
    memo = setup_memo(org)
    assert memo is not None and setup_memo(org) is memo
    _money(org, "money", "10")
    newer = Organization.objects.get(pk=org.pk)
    fresh = setup_memo(newer)
    assert fresh is not None and fresh is not memo
    assert setup_memo(org) is None  # the older row
    assert setup_memo(newer) is fresh


def test_a_new_period_is_read_not_guessed(tenant_a):
    """A period the memo has not seen (a new day) is read and opened."""
    import time_machine

    org, client = tenant_a.org, tenant_a.client()
    daily = _money(org, "daily", "10", period="daily")
    for i in range(2):
        ingest(client, f"w{i}")
    tomorrow = timezone.now() + timedelta(days=1)
    with time_machine.travel(tomorrow, tick=False):
        body = ingest(client, "tomorrow").json()
        answer = check(client, reserve=True).json()
    assert dec(status_of(body, "daily")["spent"]) == GPT4O_CALL_COST
    assert dec(status_of(answer, "daily")["reserved"]) == GPT4O_CALL_COST
    assert BudgetPeriod.objects.filter(budget=daily).count() == 2


def test_an_event_of_an_earlier_period_takes_the_transaction_with_counters(tenant_a):
    """An event dated in an earlier period cannot be charged in the single
    statement: it takes the transaction, which reads the counters it reports."""
    org, client = tenant_a.org, tenant_a.client()
    daily = _money(org, "daily", "10", period="daily")
    # A budget the event adds nothing to, whose period is the current one
    # (today is the 1st: its period would be yesterday's too).
    budget_create(org=org, name="images", metric="images", limit=Decimal(5), period="total")
    for i in range(2):
        ingest(client, f"w{i}")
    yesterday = timezone.now() - timedelta(days=1)
    response = ingest(client, "late", occurred_at=yesterday.isoformat())
    assert response.status_code == 201, response.content
    status = status_of(response.json(), "daily")
    assert dec(status["spent"]) == GPT4O_CALL_COST
    assert dec(status["reserved"]) == 0
    images = status_of(response.json(), "images")
    assert (dec(images["spent"]), dec(images["reserved"])) == (0, 0)
    periods = BudgetPeriod.objects.filter(budget=daily).order_by("start")
    assert [p.spent for p in periods] == [GPT4O_CALL_COST, 2 * GPT4O_CALL_COST]


def test_a_memo_part_starts_over_when_full(monkeypatch):
    """An organization meeting new profiles (or periods) without end does not
    grow a process's memory without end."""
    from profiles import setup

    monkeypatch.setattr(setup, "MAX_ENTRIES", 2)
    memo: dict = {}
    setup.profiles_learn(memo, {"a": Profile(external_id="a"), "b": Profile(external_id="b")})
    assert setup.profiles_known(memo, ["a", "b"]) is not None
    setup.profiles_learn(memo, {"c": Profile(external_id="c")})
    assert setup.profiles_known(memo, ["a"]) is None
    assert setup.profiles_known(memo, ["c"]) == {"c": memo["profiles"]["c"]}


def test_a_memo_part_starting_over_never_fails_a_reader(monkeypatch):
    """Threads of one process read and learn the same memo; one starting a
    part over must not pull a name from under another's lookup."""
    import sys
    import threading

    from profiles import setup

    monkeypatch.setattr(setup, "MAX_ENTRIES", 3)
    memo: dict = {}
    names = [f"p{i}" for i in range(6)]
    profiles = {n: Profile(external_id=n) for n in names}
    errors: list[BaseException] = []
    stop = threading.Event()

    def learn() -> None:
        while not stop.is_set():
            for n in names:
                setup.profiles_learn(memo, {n: profiles[n]})

    def read() -> None:
        try:
            while not stop.is_set():
                for n in names:
                    found = setup.profiles_known(memo, [n])
                    assert found is None or found == {n: profiles[n]}
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=f) for f in (learn, learn, read, read)]
    try:
        for t in threads:
            t.start()
        stop.wait(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_a_price_change_in_flight_holds_up_no_tenants_writes(tenant_a, tenant_b):
    """A catalog change bumps every organization's version in its
    transaction; the locks it takes must let other tenants' writes (whose
    foreign keys share-lock their organization) go on meanwhile."""
    import threading

    from django.db import transaction

    from tests.quotas.helpers import InBackground

    budget_create(org=tenant_b.org, name="cap", limit=Decimal(5))
    client = tenant_b.client()
    inside, done = threading.Event(), threading.Event()

    def change_prices():
        with transaction.atomic():
            price = global_price("openai", "gpt-4o")
            Price.objects.filter(pk=price.pk).update(source="edited")
            inside.set()
            done.wait(10)

    changing = InBackground(change_prices)
    try:
        assert inside.wait(10)
        answer = check(client, reserve=True)
        body = answer.json()
        assert answer.status_code == 200 and "degraded" not in body, body
        assert body["reservation_id"] is not None
        assert ingest(client, "during").status_code == 201
    finally:
        done.set()
        changing.join()


def test_an_organization_with_too_many_budgets_keeps_none_in_memory(tenant_a, monkeypatch):
    """Past MEMO_BUDGETS_MAX budgets a process does not hold them all: the
    requests read their budgets as before, and are as right."""
    import quotas.services.periods as quota_periods

    monkeypatch.setattr(quota_periods, "MEMO_BUDGETS_MAX", 2)
    org, client = tenant_a.org, tenant_a.client()
    for name in ("a", "b", "c"):
        _money(org, name, "10")
    for i in range(3):
        ingest(client, f"warm-{i}", profile="u1")
    response, queries = _queries(lambda: ingest(client, "e1", profile="u1"))
    assert queries == 3  # the key, the read ahead, the write
    body = response.json()
    assert {b["name"]: dec(b["spent"]) for b in body["budgets"]} == {
        n: 4 * GPT4O_CALL_COST for n in ("a", "b", "c")
    }
    response, queries = _queries(lambda: check(client, profile="u1", reserve=True))
    assert queries == 3
    assert response.json()["allowed"] is True
