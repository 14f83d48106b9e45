"""The quotas admin as tenant admins use it: budgets with their bars and periods,
releasing holds, the profile page's quota summary, and tenant isolation.
The clock is frozen at 2026-11-20 12:00:00Z."""

from __future__ import annotations

from decimal import Decimal

import pytest
import time_machine
from django.test import Client

from profiles.models import Membership
from quotas.models import Budget, BudgetPeriod, Reservation
from quotas.services import Dimensions, budget_create, quota_check
from tests.admin_forms import read_form
from tests.factories import MembershipFactory
from tests.quotas.helpers import period_of, post_json, utc

BUDGETS = "/admin/quotas/budget/"
RESERVATIONS = "/admin/quotas/reservation/"


@pytest.fixture(autouse=True)
def frozen():
    # November 2026 (tenant_a is in UTC): the current month is [11-01, 12-01).
    with time_machine.travel(utc(2026, 11, 20, 12), tick=False):
        yield


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def spend(tenant, key: str, cost: str, **extra) -> None:
    """Record a client-priced event (acme-ai is not in the catalog) through the API."""
    body = {"idempotency_key": key, "provider": "acme-ai", "model": "m1", "cost": cost, **extra}
    response = post_json(tenant.client(), "/api/v1/usage", body)
    assert response.status_code == 201, response.content


def hold(tenant, amount: str) -> Reservation:
    result = quota_check(
        org=tenant.org,
        dims=Dimensions(tenant.profile.pk, None, "acme-ai", "m1", "default"),
        amounts={"cost": Decimal(amount)},
        reserve=True,
    )
    assert result.allowed
    return result.reservation


@pytest.fixture
def acme_budget(tenant_a):
    budget = budget_create(
        org=tenant_a.org, name="Acme monthly", limit=Decimal("10"), profile=tenant_a.profile
    )
    # 4.52 of 10 spent this month: 45.2 %.
    spend(tenant_a, "acme-1", "4.52", profile=tenant_a.profile.external_id)
    return budget


@pytest.fixture
def globex_budget(tenant_b):
    return budget_create(org=tenant_b.org, name="Globex cap", limit=Decimal("50"))


def test_budget_changelist_shows_the_tenants_budget_with_bar_and_figures(
    alice, acme_budget, globex_budget
):
    response = admin_client(alice).get(BUDGETS)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Acme monthly" in html
    assert 'class="budget-bar"' in html
    assert 'title="45.2%"' in html  # 4.52 / 10 = 45.2 %
    assert "width:45.2%" in html
    # The period figures: spent / limit.
    assert "4.520000000000 / 10.000000000000" in html
    assert "Globex cap" not in html


def test_budget_bar_turns_red_past_the_limit(alice, tenant_a):
    budget_create(org=tenant_a.org, name="Blown", limit=Decimal("1"), action="warn")
    spend(tenant_a, "blown-1", "1.50")  # 150 % of the limit
    html = admin_client(alice).get(BUDGETS).content.decode()
    assert 'title="150.0%"' in html
    assert "width:100.0%" in html  # the bar is capped at full width
    assert "#dc2626" in html  # red


def test_budget_change_page_has_the_periods_inline(alice, tenant_a, acme_budget):
    # An event of last month opens that month's period too: 0.25 in October.
    spend(
        tenant_a,
        "acme-oct",
        "0.25",
        profile=tenant_a.profile.external_id,
        occurred_at="2026-10-10T10:00:00Z",
    )
    assert period_of(acme_budget, utc(2026, 10, 1)).spent == Decimal("0.25")
    response = admin_client(alice).get(f"{BUDGETS}{acme_budget.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="periods-group"' in html
    assert "Budget periods" in html
    assert 'name="periods-TOTAL_FORMS" value="2"' in html  # both periods listed
    assert "4.520000000000" in html  # this month's spent
    assert "0.250000000000" in html  # October's spent


def test_release_action_releases_held_reservations_of_her_tenant_only(
    alice, tenant_a, tenant_b, acme_budget, globex_budget
):
    mine = [hold(tenant_a, "1.00"), hold(tenant_a, "0.50")]
    theirs = hold(tenant_b, "2.00")
    period = period_of(acme_budget)
    assert period.reserved == Decimal("1.50")
    response = admin_client(alice).post(
        RESERVATIONS,
        {
            "action": "release",
            "_selected_action": [str(r.pk) for r in [*mine, theirs]],
            "index": "0",
            "select_across": "0",
        },
    )
    assert response.status_code == 302
    for reservation in mine:
        reservation.refresh_from_db()
        assert reservation.status == Reservation.Status.RELEASED
    period.refresh_from_db()
    assert period.reserved == 0  # 1.50 - 1.00 - 0.50
    theirs.refresh_from_db()
    assert theirs.status == Reservation.Status.HELD
    assert period_of(globex_budget).reserved == Decimal("2.00")


def test_release_action_run_by_another_tenant_changes_nothing(charlie, tenant_a, acme_budget):
    reservation = hold(tenant_a, "1.00")
    response = admin_client(charlie).post(
        RESERVATIONS,
        {"action": "release", "_selected_action": [str(reservation.pk)], "index": "0"},
    )
    assert response.status_code in {200, 302}
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD
    assert period_of(acme_budget).reserved == Decimal("1.00")


def test_release_action_needs_a_managing_role(bob, tenant_a, acme_budget):
    reservation = hold(tenant_a, "1.00")
    admin_client(bob).post(
        RESERVATIONS,
        {"action": "release", "_selected_action": [str(reservation.pk)], "index": "0"},
    )
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.HELD
    assert period_of(acme_budget).reserved == Decimal("1.00")


def test_profile_change_page_shows_quota_and_usage_this_month(alice, tenant_a, acme_budget):
    response = admin_client(alice).get(f"/admin/profiles/profile/{tenant_a.profile.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Quota and usage this month" in html
    assert "Spent this month: <strong>$4.52</strong> in 1 call(s)" in html
    assert "Acme monthly (monthly cost): 4.520000000000 of 10.000000000000" in html
    assert 'class="budget-bar"' in html


def test_charlie_never_sees_tenant_as_budgets_or_reservations(
    charlie, tenant_a, acme_budget, globex_budget
):
    reservation = hold(tenant_a, "1.00")
    client = admin_client(charlie)
    listing = client.get(BUDGETS).content.decode()
    assert "Globex cap" in listing
    assert "Acme monthly" not in listing
    assert "4.520000000000" not in listing
    assert client.get(f"{BUDGETS}{acme_budget.pk}/change/").status_code == 404
    assert str(reservation.pk) not in client.get(RESERVATIONS).content.decode()
    assert client.get(f"{RESERVATIONS}{reservation.pk}/change/").status_code == 404
    profile_page = client.get(f"/admin/profiles/profile/{tenant_a.profile.pk}/change/")
    assert profile_page.status_code == 404


def budget_form(tenant, **fields: str) -> dict[str, str]:
    """The budget add form as a tenant admin fills it in: a monthly cap of 5."""
    return {
        "organization": str(tenant.org.pk),
        "name": "Made in admin",
        "provider": "",
        "model": "",
        "operation": "",
        "metric": "cost",
        "period": "monthly",
        "limit": "5",
        "thresholds": "[80, 100]",
        "action": "block",
        "active": "on",
        "periods-TOTAL_FORMS": "0",
        "periods-INITIAL_FORMS": "0",
        "periods-MIN_NUM_FORMS": "0",
        "periods-MAX_NUM_FORMS": "0",
        **fields,
    }


def test_a_budget_added_in_the_admin_starts_from_the_ledger(alice, tenant_a):
    spend(tenant_a, "before", "0.75")  # recorded before the budget exists
    response = admin_client(alice).post(f"{BUDGETS}add/", budget_form(tenant_a))
    assert response.status_code == 302, response.content.decode()[:2000]
    budget = Budget.objects.get(name="Made in admin")
    assert budget.organization == tenant_a.org
    assert period_of(budget).spent == Decimal("0.75")


@pytest.mark.parametrize("profile", ["abc", "99999999999999999999999", "a\x00b"])
def test_a_profile_that_is_no_profile_id_is_a_form_error(alice, tenant_a, profile):
    response = admin_client(alice).post(f"{BUDGETS}add/", budget_form(tenant_a, profile=profile))
    assert response.status_code == 200  # the form again, the field's error on it
    assert "profile" in response.context["adminform"].form.errors
    assert not Budget.objects.filter(name="Made in admin").exists()


@pytest.mark.parametrize("scope", ["profile", "api_key"])
def test_a_budget_cannot_count_another_tenants_profile_or_key(alice, tenant_a, tenant_b, scope):
    # alice manages both tenants: the form offers both tenants' profiles and keys.
    MembershipFactory(user=alice, organization=tenant_b.org, role=Membership.Role.OWNER)
    theirs = {"profile": tenant_b.profile, "api_key": tenant_b.key}[scope]
    form = budget_form(tenant_a, **{scope: str(theirs.pk)})
    response = admin_client(alice).post(f"{BUDGETS}add/", form)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors[scope] == [
        f"The {scope.replace('_', ' ')} belongs to another organization."
    ]
    assert not Budget.objects.filter(name="Made in admin").exists()


def test_a_listed_period_posted_back_as_a_new_one_is_not_saved(alice, tenant_a, acme_budget):
    url = f"{BUDGETS}{acme_budget.pk}/change/"
    form = read_form(admin_client(alice).get(url).content.decode(), Budget)
    assert form.data["periods-INITIAL_FORMS"] == ["1"]
    # A count of listed rows below the page's: the period's row is posted as a new one.
    response = admin_client(alice).post(url, {**form.data, "periods-INITIAL_FORMS": "0"})
    assert response.status_code == 302
    assert BudgetPeriod.objects.filter(budget=acme_budget).count() == 1
