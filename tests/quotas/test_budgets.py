"""Budgets as client apps use them: created through POST /api/v1/budgets, charged by
POST /api/v1/usage, enforced by POST /api/v1/quota/check, rolled over by the clock.

Unless a test says otherwise the clock is frozen at 2026-11-20 12:00:00Z and
tenant_a is in UTC. Prices (catalog): gpt-4o $2.50 / $10 per 1M in / out,
gpt-4o-mini $0.15 / $0.60, claude-sonnet-4-5 $3 / $15, dall-e-3 $0.04 an image.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
import time_machine
from rest_framework.test import APIClient

from profiles.models import Profile
from quotas.models import Budget, BudgetPeriod, Reservation
from quotas.services import reservations_expire
from quotas.tasks import open_periods
from tests.factories import OrganizationFactory, make_key
from tests.quotas.helpers import (
    BUDGETS_URL,
    GPT4O_CALL_COST,
    STATUS_KEYS,
    check,
    dec,
    ingest,
    patch_json,
    period_of,
    post_json,
    status_of,
    utc,
    when,
)

NOW = utc(2026, 11, 20, 12)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def create_budget(client, **body):
    response = post_json(client, BUDGETS_URL, body)
    assert response.status_code == 201, response.content
    return response.json()


def budget_url(budget_id) -> str:
    return f"{BUDGETS_URL}/{budget_id}"


def denied_by(response) -> str:
    """The message names the budgets that would be exceeded."""
    return response.json()["message"]


# -- the shapes apps need ------------------------------------------------------------------


def test_a_profiles_monthly_quota_blocks_that_profile_once_exceeded(tenant_a, catalog, frozen):
    client = tenant_a.client()
    created = create_budget(
        client, name="user-42 monthly", profile="user-42", period="monthly", limit="0.05"
    )
    assert created["profile"] == "user-42"
    assert (created["metric"], created["period"], created["action"]) == (
        "cost",
        "monthly",
        "block",
    )
    assert Profile.objects.filter(organization=tenant_a.org, external_id="user-42").exists()

    first = ingest(client, "e-1", profile="user-42")
    assert first.status_code == 201
    assert dec(status_of(first.json(), "user-42 monthly")["spent"]) == Decimal("0.02375")
    second = ingest(client, "e-2", profile="user-42")
    # spent = 0.02375 + 0.02375 = 0.0475
    assert dec(status_of(second.json(), "user-42 monthly")["spent"]) == Decimal("0.0475")

    # 0.0475 + 0.02375 = 0.07125 > 0.05: denied for user-42 ...
    denied = check(client, profile="user-42")
    assert denied.status_code == 402
    assert denied.json()["error"] == "quota_exceeded"
    assert "user-42 monthly" in denied_by(denied)
    # ... while a small call still fits (0.0475 + 0.002375 <= 0.05) ...
    small = check(client, profile="user-42", estimate={"input_tokens": 150, "output_tokens": 200})
    assert small.status_code == 200
    # ... and another profile is not limited by user-42's quota.
    other = check(client, profile="user-43")
    assert other.status_code == 200
    assert other.json()["budgets"] == []


def test_an_organization_wide_monthly_cost_cap(tenant_a, catalog, frozen):
    client = tenant_a.client()
    create_budget(client, name="Company cap", limit="0.05")
    # Usage of any profile, any model, counts against it.
    ingest(client, "e-1", profile="user-1")  # 0.02375
    response = ingest(
        client, "e-2", profile="user-2", usage={"input_tokens": 1000, "output_tokens": 1000}
    )
    # spent = 0.02375 + (1000 * 2.5 + 1000 * 10) / 1M = 0.02375 + 0.0125 = 0.03625
    assert dec(status_of(response.json(), "Company cap")["spent"]) == Decimal("0.03625")
    # 0.03625 + 0.02375 = 0.06 > 0.05
    denied = check(client, profile="user-3")
    assert denied.status_code == 402
    # 0.03625 + 0.0125 = 0.04875 <= 0.05
    fits = check(client, profile="user-3", estimate={"input_tokens": 1000, "output_tokens": 1000})
    assert fits.status_code == 200


def test_an_organization_wide_cap_on_images(tenant_a, catalog, frozen):
    client = tenant_a.client()
    create_budget(client, name="Images", metric="images", limit="2")
    create_budget(client, name="Company cap", limit="1.00")
    response = ingest(client, "img-1", model="dall-e-3", operation="image", usage={"images": 2})
    assert response.json()["cost"] == "0.080000000000"  # 2 * 0.04
    assert status_of(response.json(), "Images")["spent"] == "2"
    # One more image: 2 + 1 > 2 -> 429 (the cost, 0.08 + 0.04 = 0.12, is within 1.00).
    denied = check(client, model="dall-e-3", operation="image", estimate={"images": 1})
    assert denied.status_code == 429
    assert "Images" in denied_by(denied)
    # A chat call uses no image: allowed.
    assert check(client).status_code == 200


def test_an_organization_wide_cap_on_messages(tenant_a, catalog, frozen):
    client = tenant_a.client()
    created = create_budget(client, name="Messages", metric="requests", limit="3")
    assert created["limit"] == "3"
    for i in range(3):
        response = ingest(client, f"msg-{i}", model="gpt-4o-mini")
        assert response.status_code == 201
    # Each event counts as one request: 3 of 3.
    assert status_of(response.json(), "Messages")["spent"] == "3"
    denied = check(client, model="gpt-4o-mini")
    assert denied.status_code == 429
    assert "Messages" in denied_by(denied)
    assert denied["X-RateLimit-Remaining"] == "0"


def test_daily_and_monthly_user_budgets_with_custom_thresholds_pause_the_user(
    tenant_a, catalog, frozen
):
    client = tenant_a.client()
    daily = create_budget(
        client,
        name="u daily",
        profile="user-9",
        period="daily",
        limit="0.05",
        thresholds=[90, 50],
        action="block",
    )
    monthly = create_budget(
        client,
        name="u monthly",
        profile="user-9",
        period="monthly",
        limit="0.10",
        thresholds=[50, 90],
        action="block",
    )
    assert daily["thresholds"] == [50, 90]
    assert monthly["thresholds"] == [50, 90]
    fetched = client.get(budget_url(daily["id"])).json()
    assert fetched["thresholds"] == [50, 90]
    assert fetched["status"]["period_start"] == "2026-11-20T00:00:00+00:00"

    # Day 1 (11-20): two calls, 0.0475 today and this month.
    ingest(client, "d1-a", profile="user-9")
    ingest(client, "d1-b", profile="user-9")
    denied = check(client, profile="user-9")  # daily 0.07125 > 0.05
    assert denied.status_code == 402
    assert "u daily" in denied_by(denied)
    assert "u monthly" not in denied_by(denied)

    # Day 2 (11-21): the daily budget starts over, the monthly one carries 0.0475.
    frozen.move_to(utc(2026, 11, 21, 9))
    allowed = check(client, profile="user-9")
    assert allowed.status_code == 200
    assert dec(status_of(allowed.json(), "u daily")["spent"]) == 0
    assert dec(status_of(allowed.json(), "u monthly")["spent"]) == Decimal("0.0475")
    ingest(client, "d2-a", profile="user-9")
    ingest(client, "d2-b", profile="user-9")  # daily 0.0475, monthly 0.095

    # Day 3 (11-22): daily room again, but the month would reach 0.095 + 0.02375 = 0.11875.
    frozen.move_to(utc(2026, 11, 22, 9))
    paused = check(client, profile="user-9")
    assert paused.status_code == 402
    assert "u monthly" in denied_by(paused)
    assert "u daily" not in denied_by(paused)
    assert dec(status_of(paused.json(), "u daily")["remaining"]) == Decimal("0.05")
    # Retry-After: the monthly period ends 2026-12-01 00:00Z, 8 days 15 hours after
    # 11-22 09:00Z = 8 * 86400 + 15 * 3600 = 745200 s.
    assert paused["Retry-After"] == "745200"


def test_a_per_model_quota_counts_only_that_model(tenant_a, catalog, frozen):
    client = tenant_a.client()
    create_budget(client, name="gpt-4o quota", model="gpt-4o", limit="0.03")
    counted = ingest(client, "e-1", model="gpt-4o-2024-08-06")  # an alias of gpt-4o
    assert dec(status_of(counted.json(), "gpt-4o quota")["spent"]) == Decimal("0.02375")
    other = ingest(client, "e-2", model="gpt-4o-mini")
    assert other.status_code == 201
    assert other.json()["budgets"] == []
    # gpt-4o: 0.02375 + 0.02375 = 0.0475 > 0.03
    assert check(client, model="gpt-4o").status_code == 402
    # gpt-4o-mini is not limited by it.
    assert check(client, model="gpt-4o-mini").status_code == 200
    budget = Budget.objects.get(name="gpt-4o quota")
    assert period_of(budget).spent == Decimal("0.02375")


def test_a_per_provider_quota_counts_only_that_provider(tenant_a, catalog, frozen):
    client = tenant_a.client()
    create_budget(client, name="Anthropic", provider="anthropic", limit="0.01")
    sonnet = {"provider": "anthropic", "model": "claude-sonnet-4-5"}
    # 1000 in * $3/1M + 500 out * $15/1M = 0.003 + 0.0075 = 0.0105 > 0.01
    big = {"input_tokens": 1000, "output_tokens": 500}
    # 500 * 3/1M + 200 * 15/1M = 0.0015 + 0.003 = 0.0045
    small = {"input_tokens": 500, "output_tokens": 200}
    assert check(client, **sonnet, estimate=big).status_code == 402
    assert check(client, **sonnet, estimate=small).status_code == 200
    response = ingest(client, "e-1", **sonnet, usage=small)
    assert dec(status_of(response.json(), "Anthropic")["spent"]) == Decimal("0.0045")
    # OpenAI usage is not counted, and OpenAI calls are not limited by it.
    assert ingest(client, "e-2").json()["budgets"] == []
    assert check(
        client, estimate={"input_tokens": 100000, "output_tokens": 100000}
    ).status_code == (200)
    # 0.0045 + 0.0045 = 0.009 <= 0.01; then 0.009 + 0.0045 = 0.0135 > 0.01.
    ingest(client, "e-3", **sonnet, usage=small)
    assert check(client, **sonnet, estimate=small).status_code == 402


def test_a_per_model_quota_named_by_an_alias_applies_to_that_model(tenant_a, catalog, frozen):
    # The client names the model the same way in the budget and in the call; the
    # service resolves the call's alias to gpt-4o, so the budget must follow (or refuse
    # the alias) rather than be accepted and never match anything.
    client = tenant_a.client()
    create_budget(client, name="Dated gpt-4o", model="gpt-4o-2024-08-06", limit="0.01")
    response = check(client, model="gpt-4o-2024-08-06")  # 0.02375 > 0.01
    assert response.status_code == 402, response.json()


def test_a_total_budget_never_resets(tenant_a, catalog, frozen):
    client = tenant_a.client()
    created = create_budget(client, name="Lifetime", period="total", limit="1.00")
    assert created["status"]["resets_at"] is None
    ingest(client, "old", occurred_at="2020-01-01T00:00:00Z")
    frozen.move_to(utc(2027, 6, 1))
    status = status_of(check(client).json(), "Lifetime")
    assert status["resets_at"] is None
    # The 2020 event and the budget's whole life count: 0.02375 (recorded after it opened).
    assert dec(status["spent"]) == GPT4O_CALL_COST


# -- settling, replays, expiry ---------------------------------------------------------------


def test_settling_replaces_the_hold_by_the_actual_amount(tenant_a, catalog, frozen):
    client = tenant_a.client()
    created = create_budget(client, name="Cap", limit="1.00")
    budget = Budget.objects.get(pk=created["id"])
    held = check(client, reserve=True)  # hold 0.02375
    rid = held.json()["reservation_id"]
    assert period_of(budget).reserved == GPT4O_CALL_COST

    # The call used less: 1000 * 2.5/1M + 1000 * 10/1M = 0.0125.
    response = ingest(
        client, "e-1", reservation_id=rid, usage={"input_tokens": 1000, "output_tokens": 1000}
    )
    assert response.status_code == 201
    status = status_of(response.json(), "Cap")
    assert dec(status["spent"]) == Decimal("0.0125")
    assert dec(status["reserved"]) == 0
    # remaining = 1.00 - 0.0125 = 0.9875
    assert dec(status["remaining"]) == Decimal("0.9875")
    period = period_of(budget)
    assert (period.spent, period.reserved) == (Decimal("0.0125"), 0)
    reservation = Reservation.objects.get(pk=rid)
    assert reservation.status == Reservation.Status.SETTLED
    assert reservation.ended_at == NOW


def test_settling_with_more_than_reserved_charges_the_actual_amount(tenant_a, catalog, frozen):
    client = tenant_a.client()
    created = create_budget(client, name="Cap", limit="1.00")
    small = {"input_tokens": 1000, "output_tokens": 1000}  # 0.0125
    rid = check(client, reserve=True, estimate=small).json()["reservation_id"]
    response = ingest(client, "e-1", reservation_id=rid)  # actually 0.02375
    status = status_of(response.json(), "Cap")
    assert (dec(status["spent"]), dec(status["reserved"])) == (GPT4O_CALL_COST, 0)
    assert period_of(Budget.objects.get(pk=created["id"])).reserved == 0


def test_an_ingest_replay_does_not_charge_or_settle_twice(tenant_a, catalog, frozen):
    client = tenant_a.client()
    created = create_budget(client, name="Cap", limit="1.00")
    budget = Budget.objects.get(pk=created["id"])
    first_hold = check(client, reserve=True).json()["reservation_id"]
    second_hold = check(client, reserve=True).json()["reservation_id"]  # reserved 0.0475

    first = ingest(client, "e-1", reservation_id=first_hold)
    assert first.status_code == 201
    replay = ingest(client, "e-1", reservation_id=first_hold)
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    # Charged once (0.02375); only the first hold came off: 0.0475 - 0.02375 = 0.02375.
    period = period_of(budget)
    assert (period.spent, period.reserved) == (GPT4O_CALL_COST, GPT4O_CALL_COST)
    assert dec(status_of(replay.json(), "Cap")["spent"]) == GPT4O_CALL_COST
    assert Reservation.objects.get(pk=second_hold).status == Reservation.Status.HELD


def test_an_expired_hold_returns_its_amount(tenant_a, catalog, frozen):
    client = tenant_a.client()
    created = create_budget(client, name="Cap", limit="1.00")
    budget = Budget.objects.get(pk=created["id"])
    rid = check(client, reserve=True, reservation_ttl=60).json()["reservation_id"]

    frozen.move_to(utc(2026, 11, 20, 12, 0, 59))  # 59 s in: still held
    assert reservations_expire() == 0
    assert period_of(budget).reserved == GPT4O_CALL_COST

    frozen.move_to(utc(2026, 11, 20, 12, 1, 1))  # 61 s in: past expires_at (12:01:00)
    assert reservations_expire() == 1
    assert period_of(budget).reserved == 0
    reservation = Reservation.objects.get(pk=rid)
    assert reservation.status == Reservation.Status.EXPIRED
    assert reservations_expire() == 0  # a second run finds nothing more
    assert period_of(budget).reserved == 0


def test_a_denied_reserve_first_clears_expired_holds(tenant_a, catalog, frozen):
    client = tenant_a.client()
    create_budget(client, name="Cap", limit="0.03")
    stale = check(client, reserve=True, reservation_ttl=60).json()["reservation_id"]
    # Within the ttl: 0.02375 + 0.02375 = 0.0475 > 0.03.
    assert check(client, reserve=True).status_code == 402
    frozen.move_to(utc(2026, 11, 20, 12, 2))
    # The stale hold no longer counts: 0 + 0.02375 <= 0.03.
    assert check(client, reserve=True).status_code == 200
    assert Reservation.objects.get(pk=stale).status == Reservation.Status.EXPIRED


# -- a budget created mid-period starts from the ledger ---------------------------------------


def test_a_budget_created_mid_month_starts_from_this_months_ledger(tenant_a, catalog, frozen):
    client = tenant_a.client()
    ingest(client, "nov-3", occurred_at="2026-11-03T08:00:00Z", profile="user-7")  # 0.02375
    ingest(
        client,
        "nov-18",
        occurred_at="2026-11-18T23:59:59Z",
        usage={"input_tokens": 1000, "output_tokens": 1000},  # 0.0125
    )
    ingest(client, "oct-31", occurred_at="2026-10-31T23:59:59Z", profile="user-7")  # last month
    ingest(client, "dec-1", occurred_at="2026-12-01T00:00:00Z")  # next month

    created = create_budget(client, name="Company cap", limit="1.00")
    # November only: 0.02375 + 0.0125 = 0.03625 (October and December not counted).
    assert dec(created["status"]["spent"]) == Decimal("0.03625")
    assert when(created["status"]["period_start"]) == utc(2026, 11, 1)

    per_user = create_budget(client, name="user-7", profile="user-7", limit="1.00")
    assert dec(per_user["status"]["spent"]) == GPT4O_CALL_COST  # only user-7's November event

    today = create_budget(client, name="Today", period="daily", limit="1.00")
    assert dec(today["status"]["spent"]) == 0  # nothing on 11-20

    # What it started from is what checks count: 1.00 - 0.03625 = 0.96375 remaining.
    status = status_of(check(client).json(), "Company cap")
    assert dec(status["remaining"]) == Decimal("0.96375")
    # And later usage adds on top: 0.03625 + 0.02375 = 0.06.
    after = ingest(client, "nov-20")
    assert dec(status_of(after.json(), "Company cap")["spent"]) == Decimal("0.06")


def test_a_count_budget_created_mid_month_starts_from_the_ledger(tenant_a, catalog, frozen):
    client = tenant_a.client()
    ingest(client, "a", occurred_at="2026-11-02T10:00:00Z")
    ingest(client, "b", occurred_at="2026-11-05T10:00:00Z", usage={"requests": 3})
    ingest(client, "img", model="dall-e-3", usage={"images": 2}, occurred_at="2026-11-06T10:00Z")
    ingest(client, "old", occurred_at="2026-10-30T10:00:00Z")
    # Requests: 1 + 3 + 1 (the image call counts as one request) = 5; October's not counted.
    requests = create_budget(client, name="Calls", metric="requests", limit="10")
    assert requests["status"]["spent"] == "5"
    images = create_budget(client, name="Images", metric="images", limit="10")
    assert images["status"]["spent"] == "2"
    # total_tokens: 1500 + 2000 for "a" only ("b" and the images have no tokens) = 3500.
    tokens = create_budget(client, name="Tokens", metric="total_tokens", limit="100000")
    assert tokens["status"]["spent"] == "3500"


def test_a_budget_created_mid_month_in_tokyo_counts_the_local_month(tenant_b, catalog, frozen):
    client = tenant_b.client()
    # 2026-10-31 15:30Z is 2026-11-01 00:30 JST: November in Tokyo.
    ingest(client, "jst-nov", occurred_at="2026-10-31T15:30:00Z")  # 0.02375
    # 2026-10-31 14:30Z is 2026-10-31 23:30 JST: October in Tokyo.
    ingest(client, "jst-oct", occurred_at="2026-10-31T14:30:00Z")
    created = create_budget(client, name="Globex monthly", limit="1.00")
    assert dec(created["status"]["spent"]) == GPT4O_CALL_COST
    # Tokyo's November starts at 2026-10-31 15:00Z and ends at 2026-11-30 15:00Z.
    assert when(created["status"]["period_start"]) == utc(2026, 10, 31, 15)
    assert when(created["status"]["resets_at"]) == utc(2026, 11, 30, 15)


# -- roll-over from the clock -----------------------------------------------------------------


def test_periods_roll_over_at_local_midnight_and_the_first_in_tokyo(tenant_b, catalog):
    client = tenant_b.client()
    with time_machine.travel(utc(2026, 11, 30, 14), tick=False) as clock:  # 23:00 JST 11-30
        monthly = create_budget(client, name="Monthly", limit="1.00")
        daily = create_budget(client, name="Daily", period="daily", limit="1.00")
        ingest(client, "late-nov")  # 0.02375 in both
        before = check(client).json()
        assert when(status_of(before, "Monthly")["period_start"]) == utc(2026, 10, 31, 15)
        assert when(status_of(before, "Daily")["period_start"]) == utc(2026, 11, 29, 15)
        assert dec(status_of(before, "Monthly")["spent"]) == GPT4O_CALL_COST

        clock.move_to(utc(2026, 11, 30, 14, 59, 59))  # 23:59:59 JST: still November
        same = check(client).json()
        assert when(status_of(same, "Monthly")["period_start"]) == utc(2026, 10, 31, 15)

        clock.move_to(utc(2026, 11, 30, 15, 0, 1))  # 00:00:01 JST 12-01
        after = check(client).json()
        for name in ("Monthly", "Daily"):
            status = status_of(after, name)
            assert when(status["period_start"]) == utc(2026, 11, 30, 15)
            assert dec(status["spent"]) == 0
            assert dec(status["reserved"]) == 0
        assert when(status_of(after, "Monthly")["resets_at"]) == utc(2026, 12, 31, 15)
        assert when(status_of(after, "Daily")["resets_at"]) == utc(2026, 12, 1, 15)
        # The budget detail shows the new period too, with nothing reset by hand.
        detail = client.get(budget_url(monthly["id"])).json()
        assert when(detail["status"]["period_start"]) == utc(2026, 11, 30, 15)
        # A check only reads (an untouched period shows empty); beat's
        # open_periods gives the new periods their rows.
        open_periods()

    # The old rows still hold their history.
    for created in (monthly, daily):
        budget = Budget.objects.get(pk=created["id"])
        old = BudgetPeriod.objects.get(budget=budget, end=utc(2026, 11, 30, 15))
        assert old.spent == GPT4O_CALL_COST
        assert BudgetPeriod.objects.filter(budget=budget).count() == 2


def test_a_daily_period_in_new_york_rolls_over_at_local_midnight_across_dst(catalog):
    org = OrganizationFactory(slug="nyc", name="NYC", timezone="America/New_York")
    _, secret = make_key(org)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    # 2026-03-08 16:00Z is 12:00 EDT, on the day clocks spring forward (23 hours long:
    # 00:00 EST = 05:00Z to 00:00 EDT on 03-09 = 04:00Z).
    with time_machine.travel(utc(2026, 3, 8, 16), tick=False) as clock:
        created = create_budget(client, name="NY daily", period="daily", limit="1.00")
        assert when(created["status"]["period_start"]) == utc(2026, 3, 8, 5)
        assert when(created["status"]["resets_at"]) == utc(2026, 3, 9, 4)
        ingest(client, "ny-1")

        clock.move_to(utc(2026, 3, 9, 3, 59, 59))  # 23:59:59 EDT: same day
        status = status_of(check(client).json(), "NY daily")
        assert when(status["period_start"]) == utc(2026, 3, 8, 5)
        assert dec(status["spent"]) == GPT4O_CALL_COST

        clock.move_to(utc(2026, 3, 9, 4))  # local midnight of 03-09, 23 hours in
        status = status_of(check(client).json(), "NY daily")
        assert when(status["period_start"]) == utc(2026, 3, 9, 4)
        assert dec(status["spent"]) == 0

        # Fall back: 2026-11-01 runs 04:00Z -> 11-02 05:00Z (25 hours). At 11-02 04:30Z
        # (23:30 EST on 11-01) it is still November 1st.
        clock.move_to(utc(2026, 11, 2, 4, 30))
        status = status_of(check(client).json(), "NY daily")
        assert when(status["period_start"]) == utc(2026, 11, 1, 4)
        assert when(status["resets_at"]) == utc(2026, 11, 2, 5)

    budget = Budget.objects.get(pk=created["id"])
    assert period_of(budget, utc(2026, 3, 8, 5)).spent == GPT4O_CALL_COST


def test_an_event_dated_in_the_previous_period_charges_that_period(tenant_a, catalog, frozen):
    client = tenant_a.client()
    created = create_budget(client, name="Monthly", limit="1.00")
    budget = Budget.objects.get(pk=created["id"])
    ingest(client, "nov-20")  # November: 0.02375

    frozen.move_to(utc(2026, 12, 2, 12))
    late = ingest(client, "late-nov", occurred_at="2026-11-25T10:00:00Z")
    assert late.status_code == 201
    # The response shows the period the event fell in: November, now 0.0475.
    status = status_of(late.json(), "Monthly")
    assert when(status["period_start"]) == utc(2026, 11, 1)
    assert dec(status["spent"]) == Decimal("0.0475")
    assert period_of(budget, utc(2026, 11, 1)).spent == Decimal("0.0475")
    # December is untouched.
    current = status_of(check(client).json(), "Monthly")
    assert when(current["period_start"]) == utc(2026, 12, 1)
    assert dec(current["spent"]) == 0

    # An event in a month whose period was never opened opens it from the ledger,
    # counted once: October = 0.02375.
    ingest(client, "oct", occurred_at="2026-10-10T10:00:00Z")
    assert period_of(budget, utc(2026, 10, 1)).spent == GPT4O_CALL_COST
    assert not BudgetPeriod.objects.filter(budget=budget, start=utc(2026, 12, 1)).exists()


# -- CRUD ---------------------------------------------------------------------------------


def test_budgets_list_retrieve_patch_and_delete(tenant_a, catalog, frozen):
    client = tenant_a.client()
    b = create_budget(client, name="B cap", limit="10")
    a = create_budget(client, name="A cap", limit="5", provider="openai", metric="cost")

    listing = client.get(BUDGETS_URL)
    assert listing.status_code == 200
    body = listing.json()
    assert body["count"] == 2
    assert [row["name"] for row in body["results"]] == ["A cap", "B cap"]
    assert body["results"][0]["status"].keys() >= STATUS_KEYS

    detail = client.get(budget_url(a["id"]))
    assert detail.status_code == 200
    assert detail.json()["provider"] == "openai"
    assert dec(detail.json()["limit"]) == Decimal("5")

    patched = patch_json(client, budget_url(a["id"]), {"limit": "7.5", "name": "A cap (raised)"})
    assert patched.status_code == 200, patched.content
    assert dec(patched.json()["limit"]) == Decimal("7.5")
    assert dec(patched.json()["status"]["limit"]) == Decimal("7.5")
    stored = Budget.objects.get(pk=a["id"])
    assert (stored.limit, stored.name, stored.provider) == (
        Decimal("7.5"),
        "A cap (raised)",
        "openai",
    )

    deleted = client.delete(budget_url(b["id"]))
    assert deleted.status_code == 204
    assert not Budget.objects.filter(pk=b["id"]).exists()
    assert not BudgetPeriod.objects.filter(budget_id=b["id"]).exists()
    assert client.get(budget_url(b["id"])).status_code == 404
    assert client.get(BUDGETS_URL).json()["count"] == 1


def test_deleting_a_budget_with_a_held_reservation_then_releasing_it_is_harmless(
    tenant_a, catalog, frozen
):
    client = tenant_a.client()
    doomed = create_budget(client, name="Doomed", limit="1.00")
    kept = create_budget(client, name="Kept", limit="1.00")
    rid = check(client, reserve=True).json()["reservation_id"]  # holds on both
    assert client.delete(budget_url(doomed["id"])).status_code == 204
    assert client.delete(f"/api/v1/reservations/{rid}").status_code == 204
    assert period_of(Budget.objects.get(pk=kept["id"])).reserved == 0
    assert Reservation.objects.get(pk=rid).status == Reservation.Status.RELEASED


def test_patch_that_changes_what_a_budget_counts_recounts_from_the_ledger(
    tenant_a, catalog, frozen
):
    client = tenant_a.client()
    created = create_budget(client, name="Cap", limit="1.00")
    ingest(client, "big")  # gpt-4o 0.02375
    # gpt-4o-mini: 1500 * 0.15/1M + 2000 * 0.60/1M = 0.000225 + 0.0012 = 0.001425
    ingest(client, "mini", model="gpt-4o-mini")
    assert dec(client.get(budget_url(created["id"])).json()["status"]["spent"]) == Decimal(
        "0.025175"
    )
    patched = patch_json(client, budget_url(created["id"]), {"model": "gpt-4o-mini"})
    assert patched.status_code == 200
    assert dec(patched.json()["status"]["spent"]) == Decimal("0.001425")


def test_patch_deactivating_a_budget_stops_enforcing_it(tenant_a, catalog, frozen):
    client = tenant_a.client()
    created = create_budget(client, name="Tight", limit="0.01")
    assert check(client).status_code == 402
    assert patch_json(client, budget_url(created["id"]), {"active": False}).status_code == 200
    assert check(client).status_code == 200


def test_the_read_scope_reads_budgets_but_cannot_write_them(tenant_a, catalog, frozen):
    created = create_budget(tenant_a.client(), name="Cap", limit="10")
    _, secret = make_key(tenant_a.org, scopes="read", name="reader")
    reader = tenant_a.client(secret)
    assert reader.get(BUDGETS_URL).status_code == 200
    assert reader.get(budget_url(created["id"])).status_code == 200

    post = post_json(reader, BUDGETS_URL, {"name": "Sneaky", "limit": "1"})
    patch = patch_json(reader, budget_url(created["id"]), {"limit": "999"})
    delete = reader.delete(budget_url(created["id"]))
    for response in (post, patch, delete):
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"
    assert list(Budget.objects.values_list("name", "limit")) == [("Cap", Decimal("10"))]


def test_the_manage_scope_writes_budgets(tenant_a, catalog, frozen):
    _, secret = make_key(tenant_a.org, scopes="manage", name="manager")
    manager = tenant_a.client(secret)
    created = post_json(manager, BUDGETS_URL, {"name": "Cap", "limit": "10"})
    assert created.status_code == 201
    budget_id = created.json()["id"]
    assert patch_json(manager, budget_url(budget_id), {"limit": "20"}).status_code == 200
    assert Budget.objects.get(pk=budget_id).limit == Decimal("20")
    assert manager.delete(budget_url(budget_id)).status_code == 204
    assert not Budget.objects.exists()


def test_the_check_and_ingest_scopes_cannot_write_budgets(tenant_a, catalog, frozen):
    _, secret = make_key(tenant_a.org, scopes="ingest,check", name="worker")
    response = post_json(tenant_a.client(secret), BUDGETS_URL, {"name": "Cap", "limit": "10"})
    assert response.status_code == 403
    assert not Budget.objects.exists()


BAD_INPUT = [
    ("limit", {"limit": "-1"}),
    ("limit", {"limit": "0"}),
    ("limit", {"limit": 0.5}),  # a JSON number with a fraction, not "0.5"
    ("limit", {"limit": "ten"}),
    ("limit", {"limit": None}),
    ("metric", {"metric": "dollars"}),
    ("period", {"period": "yearly"}),
    ("action", {"action": "stop"}),
    ("thresholds", {"thresholds": [0]}),
    ("thresholds", {"thresholds": [1001]}),
    ("thresholds", {"thresholds": ["x"]}),
    ("thresholds", {"thresholds": []}),
    ("thresholds", {"thresholds": [80, 80]}),
    ("api_key", {"api_key": "00000000-0000-4000-8000-000000000000"}),
    ("api_key", {"api_key": "not-a-uuid"}),
    ("name", {"name": ""}),
    ("limit", {"metric": "requests", "limit": "2.5"}),
    ("limit", {"metric": "total_tokens", "limit": "1000.000000000001"}),
]


@pytest.mark.parametrize(
    ("field", "override"), BAD_INPUT, ids=[f"{f}={o[f]!r}" for f, o in BAD_INPUT]
)
def test_bad_budget_input_is_400_with_the_field_and_creates_nothing(
    tenant_a, catalog, frozen, field, override
):
    body = {"name": "Cap", "limit": "10", **override}
    response = post_json(tenant_a.client(), BUDGETS_URL, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid"
    assert field in response.json()["details"]
    assert not Budget.objects.exists()
    assert not BudgetPeriod.objects.exists()


def test_fractional_limits_are_kept_for_money_and_audio_seconds(tenant_a, catalog, frozen):
    client = tenant_a.client()
    for metric in ("cost", "audio_seconds"):
        body = {"name": metric, "metric": metric, "limit": "2.5"}
        response = post_json(client, BUDGETS_URL, body)
        assert response.status_code == 201, response.content
        assert Decimal(response.json()["limit"]) == Decimal("2.5")
    budget = Budget.objects.get(metric="cost")
    # Switching a fractional limit to a count metric is refused, and changes nothing.
    response = patch_json(client, f"{BUDGETS_URL}/{budget.pk}", {"metric": "requests"})
    assert response.status_code == 400, response.content
    assert "limit" in response.json()["details"]
    budget.refresh_from_db()
    assert budget.metric == "cost"


def test_another_tenants_api_key_is_an_unknown_api_key(tenant_a, tenant_b, catalog, frozen):
    body = {"name": "Cap", "limit": "10", "api_key": str(tenant_b.key.pk)}
    response = post_json(tenant_a.client(), BUDGETS_URL, body)
    assert response.status_code == 400
    assert "api_key" in response.json()["details"]
    assert not Budget.objects.exists()


def test_a_refused_budget_creates_no_profile_either(tenant_a, catalog, frozen):
    # Nothing is half-written: the profile named by a refused request is not created.
    body = {
        "name": "Cap",
        "limit": "10",
        "profile": "never-created",
        "api_key": "00000000-0000-4000-8000-000000000000",
    }
    response = post_json(tenant_a.client(), BUDGETS_URL, body)
    assert response.status_code == 400
    assert "api_key" in response.json()["details"]
    assert not Budget.objects.exists()
    assert not Profile.objects.filter(external_id="never-created").exists()


@pytest.mark.parametrize(
    "override",
    [{"limit": "0"}, {"limit": 0.5}, {"thresholds": [0]}, {"metric": "dollars"}],
    ids=["zero", "float", "threshold", "metric"],
)
def test_bad_patch_is_400_and_changes_nothing(tenant_a, catalog, frozen, override):
    client = tenant_a.client()
    created = create_budget(client, name="Cap", limit="10")
    response = patch_json(client, budget_url(created["id"]), override)
    assert response.status_code == 400
    assert next(iter(override)) in response.json()["details"]
    budget = Budget.objects.get(pk=created["id"])
    assert (budget.limit, budget.thresholds, budget.metric) == (Decimal("10"), [80, 100], "cost")


def test_another_tenants_budget_is_404_to_read_patch_and_delete(
    tenant_a, tenant_b, catalog, frozen
):
    created = create_budget(tenant_a.client(), name="Acme cap", limit="10")
    intruder = tenant_b.client()
    url = budget_url(created["id"])
    assert intruder.get(url).status_code == 404
    response = patch_json(intruder, url, {"limit": "999", "name": "pwned", "active": False})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert intruder.delete(url).status_code == 404
    budget = Budget.objects.get(pk=created["id"])
    assert (budget.name, budget.limit, budget.active) == ("Acme cap", Decimal("10"), True)
    assert intruder.get(BUDGETS_URL).json()["count"] == 0


def test_mass_assignment_of_organization_spent_and_reserved_has_no_effect(
    tenant_a, tenant_b, catalog, frozen
):
    client = tenant_a.client()
    forced_id = str(uuid.uuid4())
    response = post_json(
        client,
        BUDGETS_URL,
        {
            "id": forced_id,
            "name": "Cap",
            "limit": "10",
            "organization": str(tenant_b.org.pk),
            "spent": "9.99",
            "reserved": "5",
        },
    )
    assert response.status_code == 201
    budget = Budget.objects.get(pk=response.json()["id"])
    assert str(budget.pk) != forced_id
    assert budget.organization == tenant_a.org
    period = period_of(budget)
    assert (period.spent, period.reserved) == (0, 0)

    patched = patch_json(
        client,
        budget_url(budget.pk),
        {"organization": str(tenant_b.org.pk), "spent": "9.99", "reserved": "5"},
    )
    assert patched.status_code == 200
    budget.refresh_from_db()
    assert budget.organization == tenant_a.org
    period.refresh_from_db()
    assert (period.spent, period.reserved) == (0, 0)
    assert dec(patched.json()["status"]["spent"]) == 0
    assert tenant_b.client().get(BUDGETS_URL).json()["count"] == 0


def test_a_profile_bound_key_manages_only_its_profiles_budgets(tenant_a, catalog, frozen):
    owner = tenant_a.client()
    org_wide = create_budget(owner, name="Org cap", limit="100")
    _, secret = make_key(tenant_a.org, scopes="read,manage", profile=tenant_a.profile, name="b")
    bound = tenant_a.client(secret)

    # Created without naming a profile: it is the key's profile's budget.
    mine = post_json(bound, BUDGETS_URL, {"name": "Mine", "limit": "1"})
    assert mine.status_code == 201
    assert mine.json()["profile"] == tenant_a.profile.external_id
    # The org-wide budget is not the bound key's to see or change.
    assert [row["name"] for row in bound.get(BUDGETS_URL).json()["results"]] == ["Mine"]
    assert patch_json(bound, budget_url(org_wide["id"]), {"limit": "1"}).status_code == 404
    assert Budget.objects.get(pk=org_wide["id"]).limit == Decimal("100")
    # Naming another profile is refused.
    other = post_json(bound, BUDGETS_URL, {"name": "Theirs", "limit": "1", "profile": "x"})
    assert other.status_code == 403


@pytest.mark.parametrize("method", ["post", "patch"])
def test_a_profile_bound_key_cannot_widen_a_budget_to_the_whole_organization(
    tenant_a, catalog, frozen, method
):
    # A key bound to a profile acts only for that profile: "profile": null must not
    # yield an organization-wide budget.
    _, secret = make_key(tenant_a.org, scopes="read,manage", profile=tenant_a.profile, name="b")
    bound = tenant_a.client(secret)
    if method == "post":
        response = post_json(bound, BUDGETS_URL, {"name": "Wide", "limit": "1", "profile": None})
    else:
        mine = post_json(bound, BUDGETS_URL, {"name": "Wide", "limit": "1"}).json()
        response = patch_json(bound, budget_url(mine["id"]), {"profile": None})
    assert response.status_code in {200, 201, 403}, response.content
    assert not Budget.objects.filter(organization=tenant_a.org, profile__isnull=True).exists()
