"""POST /api/v1/quota/check and DELETE /api/v1/reservations/<id>, as the contract says.

The clock is frozen at 2026-11-20 12:00:00Z (a Friday) unless a test says
otherwise; tenant_a is in UTC, so its monthly period is [11-01, 12-01) and its
daily period [11-20 00:00Z, 11-21 00:00Z).
"""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from rest_framework.test import APIClient

from profiles.models import Profile
from quotas.models import BudgetPeriod, Reservation
from quotas.services import budget_create
from tests.factories import ProfileFactory, make_key
from tests.quotas.helpers import (
    GPT4O_CALL_COST,
    STATUS_KEYS,
    check,
    dec,
    ingest,
    period_of,
    post_json,
    status_of,
    utc,
    when,
)

NOW = utc(2026, 11, 20, 12)
# Epoch seconds of 2026-12-01 00:00:00Z: 20,788 days after 1970-01-01 -> 20788 * 86400.
DEC_1_EPOCH = 1796083200
# From 2026-11-20 12:00Z to 2026-12-01 00:00Z: 10 days 12 hours = 864000 + 43200 s.
SECONDS_TO_MONTH_END = 907200
# From 2026-11-20 12:00Z to 2026-11-21 00:00Z: 12 hours.
SECONDS_TO_DAY_END = 43200


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def money_budget(org, limit: str, **fields):
    fields.setdefault("name", "Org monthly")
    return budget_create(org=org, limit=Decimal(limit), **fields)


# -- allowed -------------------------------------------------------------------------------


def test_allowed_check_answers_the_contract_body_and_rate_limit_headers(tenant_a, catalog, frozen):
    budget = money_budget(tenant_a.org, "10")
    response = check(tenant_a.client(), profile="user-42", operation="chat")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["allowed"] is True
    # gpt-4o: 1500 * 2.50/1M + 2000 * 10/1M = 0.00375 + 0.02 = 0.02375
    assert body["estimated_cost"] == "0.023750000000"
    assert body["currency"] == "USD"
    assert body["reservation_id"] is None
    assert body["expires_at"] is None
    assert "degraded" not in body
    (status,) = body["budgets"]
    assert status.keys() >= STATUS_KEYS
    assert status["id"] == str(budget.pk)
    assert status["name"] == "Org monthly"
    assert (status["metric"], status["period"], status["action"]) == ("cost", "monthly", "block")
    assert dec(status["limit"]) == Decimal("10")
    assert dec(status["spent"]) == 0
    assert dec(status["reserved"]) == 0
    assert dec(status["remaining"]) == Decimal("10")
    assert dec(status["percent_used"]) == 0
    assert when(status["period_start"]) == utc(2026, 11, 1)
    assert when(status["resets_at"]) == utc(2026, 12, 1)
    assert dec(response["X-RateLimit-Limit"]) == Decimal("10")
    assert dec(response["X-RateLimit-Remaining"]) == Decimal("10")
    assert response["X-RateLimit-Reset"] == str(DEC_1_EPOCH)
    assert "Retry-After" not in response


def test_check_without_reserve_changes_no_counter(tenant_a, catalog, frozen):
    budget = money_budget(tenant_a.org, "10")
    for _ in range(3):
        assert check(tenant_a.client()).status_code == 200
    period = period_of(budget)
    assert (period.spent, period.reserved) == (0, 0)
    assert not Reservation.objects.exists()


def test_status_reports_spent_reserved_remaining_and_percent(tenant_a, catalog, frozen):
    money_budget(tenant_a.org, "0.10")
    client = tenant_a.client()
    assert ingest(client, "e-1").status_code == 201  # spent 0.02375
    response = check(client, reserve=True)  # reserves 0.02375
    assert response.status_code == 200
    status = status_of(response.json(), "Org monthly")
    assert dec(status["spent"]) == Decimal("0.02375")
    assert dec(status["reserved"]) == Decimal("0.02375")
    # remaining = 0.10 - (0.02375 + 0.02375) = 0.0525
    assert dec(status["remaining"]) == Decimal("0.0525")
    # percent_used = spent / limit = 0.02375 / 0.10 = 23.75 % -> "23.8" (one place, half up)
    assert status["percent_used"] == "23.8"
    assert dec(response["X-RateLimit-Remaining"]) == Decimal("0.0525")


@pytest.mark.parametrize(
    "estimate",
    [
        {"input_tokens": 1500, "output_tokens": 2000},
        {"prompt_tokens": 1500, "completion_tokens": 2000},  # OpenAI's raw usage object
    ],
    ids=["meters", "openai-raw"],
)
def test_estimate_by_meters_is_priced_through_the_catalog(tenant_a, catalog, frozen, estimate):
    response = check(tenant_a.client(), estimate=estimate)
    assert response.status_code == 200, response.content
    assert response.json()["estimated_cost"] == "0.023750000000"


def test_estimate_by_model_alias_is_priced_as_the_model(tenant_a, catalog, frozen):
    response = check(tenant_a.client(), model="gpt-4o-2024-08-06")
    assert response.status_code == 200, response.content
    assert response.json()["estimated_cost"] == "0.023750000000"


def test_estimate_by_cost_is_taken_as_given(tenant_a, catalog, frozen):
    money_budget(tenant_a.org, "0.04")
    ok = check(tenant_a.client(), estimate={"cost": "0.04"})
    assert ok.status_code == 200
    assert ok.json()["estimated_cost"] == "0.040000000000"
    # 0.04 + 0.000000000001 > 0.04: one unit of the 12th place is already too much.
    over = check(tenant_a.client(), estimate={"cost": "0.040000000001"})
    assert over.status_code == 402
    assert over.json()["estimated_cost"] == "0.040000000001"


def test_estimate_must_give_meters_or_a_cost(tenant_a, catalog, frozen):
    response = check(tenant_a.client(), estimate={})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert "estimate" in response.json()["details"]


def test_estimate_cost_as_a_json_number_is_refused(tenant_a, catalog, frozen):
    response = post_json(
        tenant_a.client(),
        "/api/v1/quota/check",
        {"provider": "openai", "model": "gpt-4o", "estimate": {"cost": 0.05}},
    )
    assert response.status_code == 400
    assert "estimate.cost" in response.json()["details"]


def test_reserve_returns_a_reservation_that_expires_after_its_ttl(tenant_a, catalog, frozen):
    budget = money_budget(tenant_a.org, "10")
    response = check(tenant_a.client(), reserve=True, reservation_ttl=600)
    assert response.status_code == 200
    body = response.json()
    reservation = Reservation.objects.get(pk=body["reservation_id"])
    assert reservation.status == Reservation.Status.HELD
    assert reservation.organization == tenant_a.org
    # 12:00:00 + 600 s = 12:10:00
    assert when(body["expires_at"]) == utc(2026, 11, 20, 12, 10)
    assert reservation.expires_at == utc(2026, 11, 20, 12, 10)
    assert period_of(budget).reserved == GPT4O_CALL_COST
    assert dec(status_of(body, "Org monthly")["reserved"]) == GPT4O_CALL_COST


def test_a_check_exactly_at_the_limit_is_allowed(tenant_a, catalog, frozen):
    money_budget(tenant_a.org, "0.0475")  # room for exactly two calls of 0.02375
    client = tenant_a.client()
    assert check(client, reserve=True).status_code == 200  # 0.02375 <= 0.0475
    assert check(client, reserve=True).status_code == 200  # 0.0475 <= 0.0475
    assert check(client, reserve=True).status_code == 402  # 0.07125 > 0.0475


# -- denied: money -------------------------------------------------------------------------


@pytest.mark.parametrize("reserve", [False, True])
def test_money_budget_exceeded_is_402_with_the_body_at_top_level_and_in_details(
    tenant_a, catalog, frozen, reserve
):
    budget = money_budget(tenant_a.org, "0.02")  # 0.02375 > 0.02
    response = check(tenant_a.client(), reserve=reserve)
    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "quota_exceeded"
    assert body["message"]
    for part in (body, body["details"]):
        assert part["allowed"] is False
        assert part["estimated_cost"] == "0.023750000000"
        assert part["reservation_id"] is None
        assert part["expires_at"] is None
        status = status_of(part, "Org monthly")
        assert status.keys() >= STATUS_KEYS
        assert dec(status["remaining"]) == Decimal("0.02")
    assert response["Retry-After"] == str(SECONDS_TO_MONTH_END)
    assert dec(response["X-RateLimit-Limit"]) == Decimal("0.02")
    assert dec(response["X-RateLimit-Remaining"]) == Decimal("0.02")
    assert response["X-RateLimit-Reset"] == str(DEC_1_EPOCH)
    # Denied: no hold, no reservation.
    assert period_of(budget).reserved == 0
    assert not Reservation.objects.exists()


def test_retry_after_counts_down_to_the_end_of_the_period(tenant_a, catalog, frozen):
    money_budget(tenant_a.org, "0.02")
    frozen.move_to(utc(2026, 11, 30, 23, 59, 30))
    response = check(tenant_a.client())
    assert response.status_code == 402
    assert response["Retry-After"] == "30"  # 30 s to 2026-12-01 00:00Z


@pytest.mark.parametrize("reserve", [False, True])
def test_retry_after_waits_for_the_last_of_the_refusing_budgets_to_reset(
    tenant_a, catalog, frozen, reserve
):
    money_budget(tenant_a.org, "0.02", name="Daily spend", period="daily")
    money_budget(tenant_a.org, "0.02", name="Monthly spend")
    response = check(tenant_a.client(), reserve=reserve)
    assert response.status_code == 402
    assert {s["name"] for s in response.json()["budgets"]} == {"Daily spend", "Monthly spend"}
    # Retrying when the day ends would still meet the monthly budget.
    assert response["Retry-After"] == str(SECONDS_TO_MONTH_END)


@pytest.mark.parametrize("reserve", [False, True])
def test_a_total_budget_that_refuses_gives_no_reset_to_wait_for(tenant_a, catalog, frozen, reserve):
    money_budget(tenant_a.org, "0.02", name="Lifetime spend", period="total")
    client = tenant_a.client()
    response = check(client, reserve=reserve)
    assert response.status_code == 402
    assert status_of(response.json(), "Lifetime spend")["resets_at"] is None
    # Retry-After, as on every refusal, but no year-3000 reset: a day.
    assert response["Retry-After"] == "86400"
    assert "X-RateLimit-Reset" not in response
    assert dec(response["X-RateLimit-Remaining"]) == Decimal("0.02")
    # With a daily budget refusing too, its midnight would still meet the total one.
    money_budget(tenant_a.org, "0.02", name="Daily spend", period="daily")
    response = check(client, reserve=reserve)
    assert {s["name"] for s in response.json()["budgets"]} == {"Lifetime spend", "Daily spend"}
    assert response["Retry-After"] == "86400"


# -- denied: counts ------------------------------------------------------------------------


def test_requests_budget_exceeded_is_429(tenant_a, catalog, frozen):
    budget = budget_create(
        org=tenant_a.org, name="Daily calls", metric="requests", period="daily", limit=Decimal(2)
    )
    client = tenant_a.client()
    assert check(client, reserve=True).status_code == 200  # 1 of 2
    assert check(client, reserve=True).status_code == 200  # 2 of 2
    response = check(client, reserve=True)  # 3 > 2
    assert response.status_code == 429
    body = response.json()
    assert body["error"] == "quota_exceeded"
    assert body["allowed"] is False and body["details"]["allowed"] is False
    status = status_of(body, "Daily calls")
    assert (status["limit"], status["reserved"], status["remaining"]) == ("2", "2", "0")
    assert response["Retry-After"] == str(SECONDS_TO_DAY_END)
    assert response["X-RateLimit-Limit"] == "2"
    assert response["X-RateLimit-Remaining"] == "0"
    # 2026-11-21 00:00Z = DEC_1_EPOCH - 10 days = 1796083200 - 864000
    assert response["X-RateLimit-Reset"] == str(DEC_1_EPOCH - 864000)
    assert period_of(budget).reserved == 2


def test_requests_budget_counts_estimate_requests(tenant_a, catalog, frozen):
    budget_create(
        org=tenant_a.org, name="Calls", metric="requests", period="monthly", limit=Decimal(5)
    )
    client = tenant_a.client()
    # A batch call of 6 requests is over 5 on its own; 5 is exactly the limit.
    six = {"input_tokens": 10, "requests": 6}
    five = {"input_tokens": 10, "requests": 5}
    assert check(client, estimate=six).status_code == 429
    assert check(client, estimate=five).status_code == 200


def test_images_budget_counts_the_estimate_images(tenant_a, catalog, frozen):
    budget = budget_create(
        org=tenant_a.org, name="Images", metric="images", period="monthly", limit=Decimal(3)
    )
    client = tenant_a.client()
    four = check(client, model="dall-e-3", operation="image", estimate={"images": 4})
    assert four.status_code == 429
    assert four.json()["error"] == "quota_exceeded"
    assert four["X-RateLimit-Limit"] == "3"
    three = check(client, model="dall-e-3", operation="image", estimate={"images": 3}, reserve=True)
    assert three.status_code == 200
    assert three.json()["estimated_cost"] == "0.120000000000"  # 3 * $0.04
    assert period_of(budget).reserved == 3
    # A chat call uses no images: it passes a full images budget.
    assert check(client).status_code == 200
    one_more = check(client, model="dall-e-3", estimate={"images": 1})
    assert one_more.status_code == 429


def test_a_budget_already_past_its_limit_refuses_only_calls_that_add_to_it(
    tenant_a, catalog, frozen
):
    budget = budget_create(
        org=tenant_a.org, name="Images", metric="images", period="monthly", limit=Decimal(3)
    )
    # Recorded usage is never refused: the month already holds 5 images of 3.
    BudgetPeriod.objects.filter(budget=budget).update(spent=Decimal(5))
    client = tenant_a.client()
    chat = check(client, reserve=True)
    assert chat.status_code == 200, chat.content
    assert period_of(budget).reserved == 0  # no hold where the call adds nothing
    image = check(client, model="dall-e-3", operation="image", estimate={"images": 1})
    assert image.status_code == 429
    assert "Images" in image.json()["message"]


# -- warn budgets, scoping -------------------------------------------------------------------


def test_warn_budgets_never_deny_and_take_no_hold(tenant_a, catalog, frozen):
    budget = money_budget(tenant_a.org, "0.01", name="Heads up", action="warn")
    response = check(tenant_a.client(), reserve=True)
    assert response.status_code == 200
    assert response.json()["allowed"] is True
    status = status_of(response.json(), "Heads up")
    assert status["action"] == "warn"
    assert period_of(budget).reserved == 0
    # Even far past its limit, a warn budget lets calls through.
    client = tenant_a.client()
    for i in range(3):
        assert ingest(client, f"e-{i}").status_code == 201  # spent 3 * 0.02375 = 0.07125
    assert period_of(budget).spent == Decimal("0.07125")
    assert check(client).status_code == 200


def _scope(tenant, name: str):
    if name == "profile":
        return {"profile": Profile.objects.get(organization=tenant.org, external_id="user-1")}
    if name == "api_key":
        return {"api_key": tenant.key}
    return {}


# The call checked: profile user-1, openai / gpt-4o, operation chat, with tenant_a's key.
MATCHING = {
    "profile": None,  # filled by _scope
    "api_key": None,  # filled by _scope
    "provider": {"provider": "openai"},
    "model": {"model": "gpt-4o"},
    "operation": {"operation": "chat"},
}
NOT_MATCHING = {
    "other profile": "profile",
    "other key": "api_key",
    "other provider": {"provider": "anthropic"},
    "other model": {"model": "gpt-4o-mini"},
    "other operation": {"operation": "embed"},
}


@pytest.mark.parametrize("dimension", list(MATCHING))
def test_a_budget_whose_filter_matches_the_call_applies(tenant_a, catalog, frozen, dimension):
    ProfileFactory(organization=tenant_a.org, external_id="user-1")
    filters = MATCHING[dimension] or _scope(tenant_a, dimension)
    money_budget(tenant_a.org, "0.01", name="Tight", **filters)
    response = check(tenant_a.client(), profile="user-1", operation="chat")
    assert response.status_code == 402
    assert [b["name"] for b in response.json()["budgets"]] == ["Tight"]


@pytest.mark.parametrize("case", list(NOT_MATCHING))
def test_a_budget_of_another_profile_model_provider_operation_or_key_does_not_apply(
    tenant_a, catalog, frozen, case
):
    ProfileFactory(organization=tenant_a.org, external_id="user-1")
    other = ProfileFactory(organization=tenant_a.org, external_id="user-2")
    other_key, _ = make_key(tenant_a.org, name="other key")
    filters = NOT_MATCHING[case]
    if filters == "profile":
        filters = {"profile": other}
    elif filters == "api_key":
        filters = {"api_key": other_key}
    budget = money_budget(tenant_a.org, "0.01", name="Elsewhere", **filters)
    response = check(tenant_a.client(), profile="user-1", operation="chat", reserve=True)
    assert response.status_code == 200, response.content
    assert response.json()["budgets"] == []
    assert period_of(budget).reserved == 0


def test_other_tenants_budgets_never_apply(tenant_a, tenant_b, catalog, frozen):
    money_budget(tenant_b.org, "0.01", name="Globex cap")
    response = check(tenant_a.client())
    assert response.status_code == 200
    assert response.json()["budgets"] == []


def test_an_inactive_budget_does_not_apply(tenant_a, catalog, frozen):
    money_budget(tenant_a.org, "0.01", active=False)
    assert check(tenant_a.client()).status_code == 200


# -- keys, scopes, profiles ------------------------------------------------------------------


def test_a_key_bound_to_a_profile_checks_only_its_own_profile(tenant_a, catalog, frozen):
    mine = tenant_a.profile
    theirs = ProfileFactory(organization=tenant_a.org, external_id="someone-else")
    _, secret = make_key(tenant_a.org, scopes="check", profile=mine, name="bound")
    money_budget(tenant_a.org, "0.01", name="Mine", profile=mine)
    their_budget = money_budget(tenant_a.org, "0.01", name="Theirs", profile=theirs)
    client = tenant_a.client(secret)

    # Without naming a profile, the key acts for its own: its budget applies, not theirs.
    response = check(client)
    assert response.status_code == 402
    assert [b["name"] for b in response.json()["budgets"]] == ["Mine"]
    # Naming its own profile is the same thing.
    named = check(client, profile=mine.external_id)
    assert named.status_code == 402
    assert [b["name"] for b in named.json()["budgets"]] == ["Mine"]
    # Naming another profile is refused, and takes no hold on that profile's budget.
    other = check(client, profile=theirs.external_id, reserve=True, estimate={"cost": "0.001"})
    assert other.status_code == 403
    assert other.json()["error"] == "forbidden"
    assert period_of(their_budget).reserved == 0
    assert not Reservation.objects.exists()


def test_a_bound_key_reservation_belongs_to_its_profile(tenant_a, catalog, frozen):
    key, secret = make_key(tenant_a.org, scopes="check", profile=tenant_a.profile, name="bound")
    response = check(tenant_a.client(secret), reserve=True)
    assert response.status_code == 200
    reservation = Reservation.objects.get(pk=response.json()["reservation_id"])
    assert reservation.profile == tenant_a.profile
    assert reservation.api_key == key


def test_check_needs_the_check_scope(tenant_a, catalog, frozen):
    budget = money_budget(tenant_a.org, "10")
    _, secret = make_key(tenant_a.org, scopes="ingest,read,manage", name="no check")
    response = check(tenant_a.client(secret), reserve=True)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert period_of(budget).reserved == 0


def test_check_without_a_key_is_401(tenant_a, catalog, frozen):
    response = check(APIClient())
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


def test_an_unknown_profile_named_by_a_check_is_created(tenant_a, tenant_b, catalog, frozen):
    assert not Profile.objects.filter(external_id="brand-new-user").exists()
    response = check(tenant_a.client(), profile="brand-new-user")
    assert response.status_code == 200
    created = Profile.objects.get(external_id="brand-new-user")
    assert created.organization == tenant_a.org


# -- releasing reservations --------------------------------------------------------------------


def reserve(client) -> str:
    response = check(client, reserve=True)
    assert response.status_code == 200, response.content
    return response.json()["reservation_id"]


def test_delete_reservation_releases_the_hold(tenant_a, catalog, frozen):
    budget = money_budget(tenant_a.org, "10")
    client = tenant_a.client()
    rid = reserve(client)
    assert period_of(budget).reserved == GPT4O_CALL_COST
    response = client.delete(f"/api/v1/reservations/{rid}")
    assert response.status_code == 204
    assert period_of(budget).reserved == 0
    reservation = Reservation.objects.get(pk=rid)
    assert reservation.status == Reservation.Status.RELEASED
    assert reservation.ended_at == NOW
    # The released room is usable again: the status shows it.
    status = status_of(check(client).json(), "Org monthly")
    assert dec(status["reserved"]) == 0
    assert dec(status["remaining"]) == Decimal("10")


def test_releasing_twice_is_harmless_and_leaves_other_holds_alone(tenant_a, catalog, frozen):
    budget = money_budget(tenant_a.org, "10")
    client = tenant_a.client()
    first, second = reserve(client), reserve(client)
    assert period_of(budget).reserved == Decimal("0.04750")  # 2 * 0.02375
    assert client.delete(f"/api/v1/reservations/{first}").status_code == 204
    assert client.delete(f"/api/v1/reservations/{first}").status_code == 204
    # Only the first hold came off, once: 0.0475 - 0.02375 = 0.02375 (the second's).
    assert period_of(budget).reserved == GPT4O_CALL_COST
    assert Reservation.objects.get(pk=second).status == Reservation.Status.HELD
    assert client.delete(f"/api/v1/reservations/{second}").status_code == 204
    assert period_of(budget).reserved == 0


def test_releasing_a_settled_reservation_takes_nothing_off(tenant_a, catalog, frozen):
    budget = money_budget(tenant_a.org, "10")
    client = tenant_a.client()
    settled, other = reserve(client), reserve(client)
    assert ingest(client, "e-settle", reservation_id=settled).status_code == 201
    assert period_of(budget).reserved == GPT4O_CALL_COST  # the other hold only
    assert client.delete(f"/api/v1/reservations/{settled}").status_code == 204
    assert period_of(budget).reserved == GPT4O_CALL_COST
    assert Reservation.objects.get(pk=settled).status == Reservation.Status.SETTLED
    assert Reservation.objects.get(pk=other).status == Reservation.Status.HELD


def test_another_tenants_reservation_is_404_and_stays_held(tenant_a, tenant_b, catalog, frozen):
    budget = money_budget(tenant_a.org, "10")
    rid = reserve(tenant_a.client())
    response = tenant_b.client().delete(f"/api/v1/reservations/{rid}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert Reservation.objects.get(pk=rid).status == Reservation.Status.HELD
    assert period_of(budget).reserved == GPT4O_CALL_COST


def test_another_tenants_ingest_cannot_settle_a_reservation(tenant_a, tenant_b, catalog, frozen):
    budget = money_budget(tenant_a.org, "10")
    rid = reserve(tenant_a.client())
    response = ingest(tenant_b.client(), "globex-1", reservation_id=rid)
    assert response.status_code == 201
    assert Reservation.objects.get(pk=rid).status == Reservation.Status.HELD
    assert period_of(budget).reserved == GPT4O_CALL_COST
    assert period_of(budget).spent == 0


def test_an_unknown_reservation_is_404(tenant_a, catalog, frozen):
    response = tenant_a.client().delete(f"/api/v1/reservations/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_delete_reservation_needs_the_check_scope(tenant_a, catalog, frozen):
    budget = money_budget(tenant_a.org, "10")
    rid = reserve(tenant_a.client())
    _, secret = make_key(tenant_a.org, scopes="read", name="reader")
    response = tenant_a.client(secret).delete(f"/api/v1/reservations/{rid}")
    assert response.status_code == 403
    assert period_of(budget).reserved == GPT4O_CALL_COST


# -- fail mode: the limiter really failing ------------------------------------------------------


def _hold_lock(sql: str, params: list, locked: threading.Event, done: threading.Event) -> None:
    """In its own connection and transaction: take the lock ``sql`` takes and
    hold it until ``done``."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            locked.set()
            done.wait(timeout=30)
    finally:
        connection.close()


def _hold_row_lock(period_id: int, locked: threading.Event, done: threading.Event) -> None:
    """Lock the period row until ``done``."""
    sql = f"SELECT id FROM {BudgetPeriod._meta.db_table} WHERE id = %s FOR UPDATE"
    _hold_lock(sql, [period_id], locked, done)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_fail_mode_decides_when_the_limiter_cannot_take_its_lock(
    tenant_a, catalog, settings, fail_mode
):
    settings.QUOTA_LOCK_TIMEOUT_MS = 200
    tenant_a.org.fail_mode = fail_mode
    tenant_a.org.save()
    budget = money_budget(tenant_a.org, "10")
    period = period_of(budget)
    locked, done = threading.Event(), threading.Event()
    locker = threading.Thread(target=_hold_row_lock, args=(period.pk, locked, done), daemon=True)
    locker.start()
    try:
        assert locked.wait(timeout=10), "the lock holder never got its lock"
        started = time.monotonic()
        response = check(tenant_a.client(), reserve=True)
        elapsed = time.monotonic() - started
    finally:
        done.set()
        locker.join(timeout=10)
    assert not locker.is_alive()
    # It gave up after about 200 ms, not the 2 s default.
    assert elapsed < 1.5, elapsed
    body = response.json()
    if fail_mode == "closed":
        assert response.status_code == 503
        assert body["error"] == "limiter_unavailable"
        assert body["message"]
        assert "details" in body
    else:
        assert response.status_code == 200
        assert body["allowed"] is True
        assert body["degraded"] is True
        assert body["reservation_id"] is None
        assert body["estimated_cost"] == "0.023750000000"
    # Nothing was held by the failed attempt.
    period.refresh_from_db()
    assert (period.spent, period.reserved) == (0, 0)
    assert not Reservation.objects.exists()
    # Once the lock is gone the limiter answers normally again.
    again = check(tenant_a.client(), reserve=True)
    assert again.status_code == 200
    assert "degraded" not in again.json()
    period.refresh_from_db()
    assert period.reserved == GPT4O_CALL_COST


def _hold_table_lock(locked: threading.Event, done: threading.Event) -> None:
    """Lock the budget table against every read until ``done`` (as a
    migration's ALTER TABLE would)."""
    _hold_lock("LOCK TABLE quotas_budget IN ACCESS EXCLUSIVE MODE", [], locked, done)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_fail_mode_decides_when_the_limiters_read_fails(tenant_a, catalog, fail_mode):
    tenant_a.org.fail_mode = fail_mode
    tenant_a.org.save()
    money_budget(tenant_a.org, "10")
    client = tenant_a.client()
    assert check(client).status_code == 200  # the key's first-use stamp, before the lock
    locked, done = threading.Event(), threading.Event()
    locker = threading.Thread(target=_hold_table_lock, args=(locked, done), daemon=True)
    locker.start()
    try:
        assert locked.wait(timeout=10), "the lock holder never got its lock"
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        response = check(client, estimate={"cost": "0.25"})
    finally:
        done.set()
        locker.join(timeout=10)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    body = response.json()
    if fail_mode == "closed":
        assert response.status_code == 503
        assert body["error"] == "limiter_unavailable"
    else:
        assert response.status_code == 200
        assert (body["allowed"], body["degraded"]) == (True, True)
        assert body["estimated_cost"] == "0.250000000000"
    again = check(client)
    assert again.status_code == 200
    assert "degraded" not in again.json()


def test_a_check_reads_its_profile_prices_and_budgets_in_one_statement(tenant_a, catalog, frozen):
    from django.test.utils import CaptureQueriesContext

    mine = ProfileFactory(organization=tenant_a.org, external_id="user-1")
    money_budget(tenant_a.org, "100", name="Mine", profile=mine)
    money_budget(tenant_a.org, "100", name="Shared")
    money_budget(
        tenant_a.org, "100", name="Theirs", profile=ProfileFactory(organization=tenant_a.org)
    )
    client = tenant_a.client()
    # The key's first-use stamp, and the first reservation opens the periods.
    check(client, profile="user-1", reserve=True, estimate={"cost": "0.001"})

    counts = {}
    for reserve in (False, True):
        with CaptureQueriesContext(connection) as captured:
            response = check(client, profile="user-1", reserve=reserve)
        assert response.status_code == 200, response.content
        assert sorted(b["name"] for b in response.json()["budgets"]) == ["Mine", "Shared"]
        # (The test's transaction puts a savepoint around the reservation.)
        counts[reserve] = sum("SAVEPOINT" not in q["sql"] for q in captured.captured_queries)
    # The key, then one read; a reservation adds its one statement.
    assert counts == {False: 2, True: 3}


def test_a_profile_first_named_by_a_reservation_is_created_and_holds_it(tenant_a, catalog, frozen):
    money_budget(tenant_a.org, "100", name="Shared")

    response = check(tenant_a.client(), profile="brand-new", reserve=True)

    assert response.status_code == 200, response.content
    profile = Profile.objects.get(organization=tenant_a.org, external_id="brand-new")
    reservation = Reservation.objects.get(id=response.json()["reservation_id"])
    assert reservation.profile_id == profile.pk
