"""Counters against the ledger: 10,000 mixed events recorded through the batch API
leave every budget's counter equal to the ledger (zero drift); drift injected by
hand is found, repaired to the ledger's figures exactly and reported once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db.models import F
from django.utils import timezone

from costs.models import UsageEvent
from quotas.models import Alert, BudgetPeriod
from quotas.reconcile import periods_reconcile
from quotas.services import budget_create
from tests.factories import ProfileFactory

EVENTS = 10_000
BATCH = 1_000
MILLION = Decimal(1_000_000)

# Published list prices, dollars per 1M tokens: (input, output).
PUBLISHED = {
    ("openai", "gpt-4o"): (Decimal("2.50"), Decimal("10")),
    ("openai", "gpt-4o-mini"): (Decimal("0.15"), Decimal("0.60")),
    ("anthropic", "claude-sonnet-4-5"): (Decimal("3"), Decimal("15")),  # below its 200k tier
}
MODELS = list(PUBLISHED)
PROFILES = [f"user-{n}" for n in range(1, 6)]
OPERATIONS = ["chat", "summarize", "classify", "extract"]


def spec(i: int) -> dict:
    """The i-th event: models, profiles and operations interleave; quantities vary."""
    provider, model = MODELS[i % len(MODELS)]
    return {
        "provider": provider,
        "model": model,
        "profile": PROFILES[i % len(PROFILES)],
        "operation": OPERATIONS[i % len(OPERATIONS)],
        "input_tokens": 100 + (i % 37) * 10,
        "output_tokens": 20 + (i % 23) * 5,
        "requests": 3 if i % 7 == 0 else 0,  # 0: not sent, counts as one request
    }


def cost_of(s: dict) -> Decimal:
    rate_in, rate_out = PUBLISHED[(s["provider"], s["model"])]
    return (s["input_tokens"] * rate_in + s["output_tokens"] * rate_out) / MILLION


def month_start_local(tz: str) -> datetime:
    local = timezone.now().astimezone(ZoneInfo(tz))
    return datetime(local.year, local.month, 1, tzinfo=ZoneInfo(tz))


def record_batches(tenant, specs: list[dict], prefix: str) -> None:
    """Record ``specs`` through the batch API, 1,000 per request, spread evenly from
    the start of this month (the organization's time) to now."""
    start = month_start_local(tenant.org.timezone)
    span = timezone.now() - start - timedelta(seconds=2)
    client = tenant.client()
    for first in range(0, len(specs), BATCH):
        events = []
        for i in range(first, min(first + BATCH, len(specs))):
            s = specs[i]
            usage = {"input_tokens": s["input_tokens"], "output_tokens": s["output_tokens"]}
            if s["requests"]:
                usage["requests"] = s["requests"]
            occurred = start + timedelta(seconds=1) + span * i / len(specs)
            events.append(
                {
                    "idempotency_key": f"{prefix}-{i}",
                    "provider": s["provider"],
                    "model": s["model"],
                    "profile": s["profile"],
                    "operation": s["operation"],
                    "usage": usage,
                    "occurred_at": occurred.astimezone(UTC).isoformat(),
                }
            )
        response = client.post(
            "/api/v1/usage/batch",
            data=json.dumps({"events": events}),
            content_type="application/json",
        )
        assert response.status_code == 200, response.content[:500]
        results = response.json()["results"]
        assert {r["status"] for r in results} == {201}, results[:3]


def period_of(budget) -> BudgetPeriod:
    now = timezone.now()
    return BudgetPeriod.objects.get(budget=budget, start__lte=now, end__gt=now)


@pytest.fixture
def new_york_tenant(tenant_a, catalog):
    tenant_a.org.timezone = "America/New_York"
    tenant_a.org.save()
    tenant_a.org.refresh_from_db()
    return tenant_a


@pytest.mark.django_db
def test_ten_thousand_mixed_events_reconcile_with_zero_drift_and_injected_drift_is_repaired(
    new_york_tenant,
):
    tenant = new_york_tenant
    org = tenant.org
    user_1 = ProfileFactory(organization=org, external_id="user-1")
    budgets = {
        "org_cost": budget_create(org=org, name="Org cost", limit=Decimal("100000")),
        "profile_cost": budget_create(
            org=org, name="user-1 cost", profile=user_1, limit=Decimal("100000")
        ),
        "claude_cost": budget_create(
            org=org,
            name="Claude cost",
            provider="anthropic",
            model="claude-sonnet-4-5",
            limit=Decimal("100000"),
        ),
        "requests": budget_create(
            org=org, name="Requests", metric="requests", limit=Decimal("10000000")
        ),
        "gpt4o_tokens": budget_create(
            org=org,
            name="gpt-4o tokens",
            model="gpt-4o",
            metric="total_tokens",
            limit=Decimal("1000000000"),
        ),
    }
    specs = [spec(i) for i in range(EVENTS)]
    record_batches(tenant, specs, "reconcile")
    expected = {
        "org_cost": sum((cost_of(s) for s in specs), Decimal(0)),
        "profile_cost": sum((cost_of(s) for s in specs if s["profile"] == "user-1"), Decimal(0)),
        "claude_cost": sum(
            (cost_of(s) for s in specs if s["model"] == "claude-sonnet-4-5"), Decimal(0)
        ),
        # Every 7th event (1,429 of them) says requests=3; the other 8,571 count one each.
        "requests": Decimal(1_429 * 3 + 8_571),
        "gpt4o_tokens": Decimal(
            sum(s["input_tokens"] + s["output_tokens"] for s in specs if s["model"] == "gpt-4o")
        ),
    }
    assert expected["requests"] == sum(max(s["requests"], 1) for s in specs)
    assert UsageEvent.objects.filter(organization=org).count() == EVENTS
    assert not UsageEvent.objects.filter(organization=org, priced=False).exists()
    for name, budget in budgets.items():
        period = period_of(budget)
        assert (period.spent, period.reserved) == (expected[name], 0), name

    # Counters equal the ledger: nothing to repair, nothing to report.
    assert periods_reconcile(org=org) == []
    assert not Alert.objects.filter(organization=org).exists()

    # Drift by hand: money on one counter, tokens and a phantom hold on another.
    cost_period = period_of(budgets["org_cost"])
    tokens_period = period_of(budgets["gpt4o_tokens"])
    BudgetPeriod.objects.filter(pk=cost_period.pk).update(spent=F("spent") + Decimal("0.5"))
    BudgetPeriod.objects.filter(pk=tokens_period.pk).update(
        spent=F("spent") - 7, reserved=Decimal(3)
    )

    drifts = periods_reconcile(org=org)

    by_period = {d.period_id: d for d in drifts}
    assert set(by_period) == {cost_period.pk, tokens_period.pk}
    assert by_period[cost_period.pk].spent_before == expected["org_cost"] + Decimal("0.5")
    assert by_period[cost_period.pk].spent_after == expected["org_cost"]
    tokens = by_period[tokens_period.pk]
    assert (tokens.spent_before, tokens.spent_after) == (
        expected["gpt4o_tokens"] - 7,
        expected["gpt4o_tokens"],
    )
    assert (tokens.reserved_before, tokens.reserved_after) == (3, 0)
    for name, budget in budgets.items():
        period = period_of(budget)
        assert (period.spent, period.reserved) == (expected[name], 0), name

    (alert,) = Alert.objects.filter(organization=org)
    assert alert.kind == Alert.Kind.RECONCILIATION_DRIFT
    assert sorted(alert.data["periods"]) == sorted([cost_period.pk, tokens_period.pk])
    assert "Org cost" in alert.message
    assert "gpt-4o tokens" in alert.message

    # Repaired: a second run finds nothing and reports nothing more.
    assert periods_reconcile(org=org) == []
    assert Alert.objects.filter(organization=org).count() == 1
