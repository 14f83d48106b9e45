"""`manage.py demo`: a demo tenant whose dashboard opens alive, and that a second
run with --if-empty leaves alone."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from costs.models import UsageEvent
from profiles.models import Organization, Profile
from profiles.services import api_key_create
from quotas.models import Alert, Budget
from quotas.selectors import budget_states

pytestmark = pytest.mark.django_db

DAYS = 5


@pytest.fixture
def demo(catalog) -> Organization:
    out = io.StringIO()
    call_command("demo", "--org", "demo-test", "--days", str(DAYS), "--per-day", "20", stdout=out)
    org = Organization.objects.get(slug="demo-test")
    recorded = UsageEvent.objects.filter(organization=org).count()
    assert f"Recorded {recorded} events" in out.getvalue()
    return org


def _ledger_by_day(org: Organization) -> dict[str, tuple[Decimal, int]]:
    """Cost and events per local day, straight from the ledger."""
    days: dict[str, tuple[Decimal, int]] = {}
    for at, cost in UsageEvent.objects.filter(organization=org).values_list("occurred_at", "cost"):
        day = at.astimezone(org.tz).date().isoformat()
        total, n = days.get(day, (Decimal(0), 0))
        days[day] = (total + cost, n + 1)
    return days


def test_demo_creates_an_org_with_profiles_and_budgets_of_several_metrics(demo):
    assert Profile.objects.filter(organization=demo).count() >= 10
    budgets = Budget.objects.filter(organization=demo)
    metrics = set(budgets.values_list("metric", flat=True))
    assert {"cost", "requests", "images"} <= metrics
    assert {"daily", "monthly"} <= set(budgets.values_list("period", flat=True))
    assert budgets.filter(profile__isnull=False).exists()


def test_demo_records_usage_on_each_of_the_days(demo):
    today = timezone.now().astimezone(demo.tz).date()
    expected = {(today - timedelta(days=n)).isoformat() for n in range(DAYS)}
    by_day = _ledger_by_day(demo)
    assert set(by_day) == expected
    assert all(n > 0 and cost > 0 for cost, n in by_day.values())
    assert not UsageEvent.objects.filter(organization=demo, priced=False).exists()


def test_demo_usage_spans_at_least_five_providers(demo):
    providers = set(
        UsageEvent.objects.filter(organization=demo).values_list("provider", flat=True).distinct()
    )
    assert len(providers) >= 5, sorted(providers)


def test_demo_again_with_if_empty_adds_nothing(demo):
    def counts() -> tuple[int, int, int]:
        return (
            UsageEvent.objects.filter(organization=demo).count(),
            Budget.objects.filter(organization=demo).count(),
            Profile.objects.filter(organization=demo).count(),
        )

    before = counts()
    out = io.StringIO()
    call_command(
        "demo",
        "--org",
        "demo-test",
        "--days",
        str(DAYS),
        "--per-day",
        "20",
        "--if-empty",
        stdout=out,
    )
    assert counts() == before
    assert "already has usage" in out.getvalue()
    assert Organization.objects.filter(slug="demo-test").count() == 1


def test_demo_dashboard_shows_usage_on_each_day(demo):
    issued = api_key_create(org=demo, name="demo reader", scopes="read")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    resp = client.get("/api/v1/dashboard", {"range": "7d"})
    assert resp.status_code == 200, resp.content
    body = resp.json()

    ledger = _ledger_by_day(demo)
    nonzero = [d for d in body["by_day"] if Decimal(d["cost"]) > 0]
    assert len(nonzero) >= DAYS
    assert {d["date"]: (Decimal(d["cost"]), d["requests"]) for d in nonzero} == ledger
    assert Decimal(body["totals"]["cost"]) == sum((c for c, _ in ledger.values()), Decimal(0))
    assert len(body["by_provider"]) >= 4
    assert body["budgets"]


def test_demo_budgets_stand_past_their_first_thresholds_and_calls_still_pass(demo):
    states = {s.budget.name: s for s in budget_states(org=demo, budgets=list(
        Budget.objects.filter(organization=demo)))}  # fmt: skip
    spend = states["Monthly AI spend"]
    share = spend.period.spent / spend.budget.limit
    assert Decimal("0.84") <= share <= Decimal("0.85"), share
    for state in states.values():
        assert state.period.spent < state.budget.limit, state.budget.name
    # Its first thresholds crossed, the alerts are there to see.
    assert Alert.objects.filter(organization=demo, budget=spend.budget).count() == 2

    issued = api_key_create(org=demo, name="demo app", scopes="check")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    resp = client.post(
        "/api/v1/quota/check",
        {"provider": "openai", "model": "gpt-4o-mini", "estimate": {"input_tokens": 500},
         "reserve": True},
        format="json",
    )  # fmt: skip
    assert resp.status_code == 200, resp.content
    assert resp.json()["allowed"] is True
