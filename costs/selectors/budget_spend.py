"""The ledger's answer to "how much of this budget's metric was used between
two instants": what a new budget period starts from, and what reconciliation
compares counters to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db.models import BigIntegerField, Case, F, Sum, Value, When

from costs.models import UsageEvent

if TYPE_CHECKING:
    from quotas.models import Budget


def budget_amounts(meters: Mapping[str, int | Decimal], cost: Decimal) -> dict[str, int | Decimal]:
    """What one call (recorded, or estimated by a pre-flight check) counts for
    each budget metric: its meters, its cost, at least one request, and input +
    output as total tokens. _METRIC_EXPRESSIONS below is the same rule in SQL."""
    amounts: dict[str, int | Decimal] = dict(meters)
    amounts["cost"] = cost
    amounts["requests"] = max(int(meters.get("requests", 0)), 1)
    amounts["total_tokens"] = meters.get("input_tokens", 0) + meters.get("output_tokens", 0)
    return amounts


# Each event counts as at least one request, as budget_amounts says.
_METRIC_EXPRESSIONS = {
    "cost": F("cost"),
    "requests": Case(
        When(requests=0, then=Value(1)), default=F("requests"), output_field=BigIntegerField()
    ),
    "total_tokens": F("input_tokens") + F("output_tokens"),
}


def ledger_spend(budget: Budget, start: datetime, end: datetime) -> Decimal:
    qs = UsageEvent.objects.filter(
        organization_id=budget.organization_id, occurred_at__gte=start, occurred_at__lt=end
    )
    if budget.profile_id:
        qs = qs.filter(profile_id=budget.profile_id)
    if budget.api_key_id:
        qs = qs.filter(api_key_id=budget.api_key_id)
    for name in ("provider", "model", "operation"):
        if value := getattr(budget, name):
            qs = qs.filter(**{name: value})
    expression = _METRIC_EXPRESSIONS.get(budget.metric, F(budget.metric))
    total = qs.aggregate(total=Sum(expression))["total"]
    return Decimal(total or 0)


_DIMENSIONS = ("profile_id", "api_key_id", "provider", "model", "operation")


def ledger_spend_many(
    budgets: Sequence[Budget], start: datetime, end: datetime
) -> dict[object, Decimal]:
    """``ledger_spend`` of each of ``budgets`` (one organization's) over the
    same span, by budget id, from one read: the span's events summed by the
    dimensions budgets filter on, every metric at once, then each budget's
    share taken from the groups it matches. However many budgets, the ledger
    is read once."""
    if not budgets:
        return {}
    (org_id,) = {b.organization_id for b in budgets}
    metrics = {m: _METRIC_EXPRESSIONS.get(m, F(m)) for m in {b.metric for b in budgets}}
    groups = (
        UsageEvent.objects.filter(
            organization_id=org_id, occurred_at__gte=start, occurred_at__lt=end
        )
        .values(*_DIMENSIONS)
        .annotate(**{f"sum_{m}": Sum(expression) for m, expression in metrics.items()})
    )
    by_profile: dict[object, list[dict]] = {}
    for group in groups:
        by_profile.setdefault(group["profile_id"], []).append(group)
    every = [g for gs in by_profile.values() for g in gs]
    # Keyed by object to match quotas.spend.ManySpendSource (dicts are invariant).
    spent: dict[object, Decimal] = {}
    for budget in budgets:
        total = Decimal(0)
        for group in by_profile.get(budget.profile_id, []) if budget.profile_id else every:
            if (
                (not budget.api_key_id or group["api_key_id"] == budget.api_key_id)
                and (not budget.provider or group["provider"] == budget.provider)
                and (not budget.model or group["model"] == budget.model)
                and (not budget.operation or group["operation"] == budget.operation)
            ):
                total += Decimal(group[f"sum_{budget.metric}"] or 0)
        spent[budget.pk] = total
    return spent
