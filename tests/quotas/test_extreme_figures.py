"""Budget figures far apart (the smallest limit against a counter near its
largest value, a projection from a period's first microsecond) still render:
they are reckoned in a context wide enough for them, not Python's 28 digits."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from quotas.alerts import projection, thresholds_evaluate
from quotas.models import BudgetPeriod
from quotas.services import budget_create, current_states
from tests.quotas.helpers import BUDGETS_URL, CHECK_URL, post_json

pytestmark = pytest.mark.django_db

SMALLEST = Decimal("0.000000000001")
NEAR_THE_TOP = Decimal("100000000000000000")  # 10^17 of a counter's 10^18


@pytest.fixture
def crowded(tenant_a):
    """A budget of the smallest limit whose period has counted 10^17: 10^31 %."""
    budget = budget_create(org=tenant_a.org, name="Tiny", limit=SMALLEST, action="warn")
    (state,) = current_states(tenant_a.org, [budget], timezone.now())
    BudgetPeriod.objects.filter(pk=state.period.pk).update(spent=NEAR_THE_TOP)
    return budget


def test_its_status_renders_in_the_api(tenant_a, crowded):
    response = tenant_a.client().get(BUDGETS_URL)

    assert response.status_code == 200, response.content[:300]
    (row,) = response.json()["results"]
    assert row["status"]["percent_used"] == "10000000000000000000000000000000.0"
    assert row["status"]["spent"] == "100000000000000000.000000000000"


def test_a_check_answers_with_it(tenant_a, crowded):
    body = {"provider": "openai", "model": "gpt-4o", "estimate": {"cost": "0.01"}}

    response = post_json(tenant_a.client(), CHECK_URL, body)

    assert response.status_code == 200, response.content[:300]
    assert response.json()["budgets"][0]["percent_used"].startswith("1000000000000000")


def test_its_thresholds_raise_their_alerts(tenant_a, crowded):
    alerts = thresholds_evaluate(org=tenant_a.org)

    assert sorted(a.threshold for a in alerts) == [80, 100]
    assert alerts[0].data["percent"] == "10000000000000000000000000000000.0"


def test_a_projection_from_the_periods_first_microsecond(tenant_a, crowded):
    period = BudgetPeriod.objects.get(budget=crowded)
    now = period.start + timedelta(microseconds=1)
    microseconds = (period.end - period.start) // timedelta(microseconds=1)

    assert projection(period, now) == NEAR_THE_TOP * microseconds
