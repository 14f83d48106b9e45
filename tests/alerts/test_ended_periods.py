"""Which periods and spends raise threshold alerts: a period that ended a few
minutes ago is still evaluated (an event just before midnight takes a daily
budget over after its evaluation has moved on to the next day), and a
threshold is reached by the spend itself, not its percentage as shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from quotas.alerts import thresholds_evaluate
from quotas.models import BudgetPeriod
from quotas.periods import period_bounds
from quotas.services import budget_create

pytestmark = pytest.mark.django_db


def test_a_daily_budget_taken_over_just_before_midnight_still_alerts(tenant_a):
    """The last event of the day took yesterday's period over its limit after
    its evaluation; the next evaluation, a few minutes into the new day, looks
    at yesterday's period too."""
    budget = budget_create(org=tenant_a.org, name="Daily", period="daily", limit=Decimal(10))
    midnight = datetime(2026, 12, 2, tzinfo=UTC)
    start, end = period_bounds("daily", tenant_a.org.tz, midnight - timedelta(seconds=1))
    BudgetPeriod.objects.create(budget=budget, start=start, end=end, spent=Decimal("10.50"))

    with time_machine.travel(midnight + timedelta(minutes=5), tick=False):
        alerts = thresholds_evaluate(org=tenant_a.org)

    assert sorted(a.threshold for a in alerts) == [80, 100]
    assert {a.period.start for a in alerts} == {start}
    with time_machine.travel(midnight + timedelta(hours=2), tick=False):
        assert thresholds_evaluate(org=tenant_a.org) == []  # raised once, and long over


def test_a_threshold_is_reached_by_the_spend_itself_not_its_rounded_percentage(tenant_a):
    """79.96% shows as 80.0% but has not reached an 80% threshold."""
    budget = budget_create(org=tenant_a.org, name="Cap", limit=Decimal(100))
    BudgetPeriod.objects.filter(budget=budget).update(spent=Decimal("79.96"))

    assert thresholds_evaluate(org=tenant_a.org) == []

    BudgetPeriod.objects.filter(budget=budget).update(spent=Decimal("80"))
    (alert,) = thresholds_evaluate(org=tenant_a.org)
    assert (alert.threshold, alert.data["percent"]) == (80, "80.0")
