"""Limiter reads: budget statuses in the contract's shape."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from profiles.models import Organization, Profile
from profiles.tenancy import for_org
from quotas.amounts import WIDE, percent_used
from quotas.models import Budget
from quotas.services import BudgetState, budget_states_overview, current_states

MONEY_PLACES = Decimal("0.000000000001")


def format_amount(budget: Budget, value: Decimal) -> str:
    """Money with 12 places; counts as whole numbers (audio seconds keep decimals)."""
    if budget.is_money:
        return f"{value.quantize(MONEY_PLACES, context=WIDE):f}"
    if budget.counts_whole:
        return str(int(value))
    return f"{value.normalize():f}"


def budget_status(state: BudgetState) -> dict[str, Any]:
    budget, period = state.budget, state.period
    used = period.spent + period.reserved
    remaining = max(budget.limit - used, Decimal(0))
    percent = percent_used(period.spent, budget.limit)
    return {
        "id": str(budget.pk),
        "name": budget.name,
        "metric": budget.metric,
        "period": budget.period,
        "limit": format_amount(budget, budget.limit),
        "spent": format_amount(budget, period.spent),
        "reserved": format_amount(budget, period.reserved),
        "remaining": format_amount(budget, remaining),
        "percent_used": f"{percent:f}",
        "period_start": period.start.isoformat(),
        "resets_at": period.end.isoformat() if budget.period != Budget.Period.TOTAL else None,
        "action": budget.action,
        "thresholds": budget.thresholds,
    }


def budget_list(*, org: Organization, profile: Profile | None = None) -> QuerySet[Budget]:
    qs = for_org(Budget.objects.all(), org).select_related("profile", "api_key")
    if profile is not None:
        qs = qs.filter(profile=profile)
    return qs.order_by("name", "id")


# Profile budgets an organization-wide view shows: those nearest their limits.
OVERVIEW_PROFILE_BUDGETS = 20


def overview_budget_states(*, org: Organization) -> list[BudgetState]:
    """The budgets an organization's dashboard, admin cards and daily summary
    show, in name order: every active budget not scoped to a profile, and the
    OVERVIEW_PROFILE_BUDGETS profile budgets nearest their limits."""
    states = budget_states_overview(org, timezone.now(), profile_budgets=OVERVIEW_PROFILE_BUDGETS)
    return sorted(states, key=lambda s: (s.budget.name, str(s.budget.pk)))


def budget_states(*, org: Organization, budgets: list[Budget]) -> list[BudgetState]:
    """The budgets with their current period, read only: one query, no writes,
    no ledger (a period nothing has touched yet shows as empty)."""
    return current_states(org, budgets, timezone.now(), open_missing=False)


def tightest(states: list[BudgetState]) -> BudgetState | None:
    """The state with the least headroom relative to its limit."""
    if not states:
        return None
    return min(
        states, key=lambda s: (s.budget.limit - s.period.spent - s.period.reserved) / s.budget.limit
    )


def bar_level(percent: Decimal, thresholds: list[int]) -> str:
    """ok below the first alert threshold, warn past it, over past the last (or 100%)."""
    low = min(thresholds) if thresholds else 80
    high = max(max(thresholds) if thresholds else 100, 100)
    return "ok" if percent < low else ("warn" if percent < high else "over")
