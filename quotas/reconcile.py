"""Counters against the ledger: find drift in open periods and repair it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from profiles.models import Organization
from quotas.alerts import AlertSpec, alert_raise
from quotas.models import Alert, BudgetPeriod
from quotas.services import period_held
from quotas.spend import spend_between


@dataclass(frozen=True)
class Drift:
    period_id: int
    budget: str
    spent_before: Decimal
    spent_after: Decimal
    reserved_before: Decimal
    reserved_after: Decimal


def periods_reconcile(
    *,
    org: Organization,
    now: datetime | None = None,
    budget_ids: Sequence[uuid.UUID | str] | None = None,
) -> list[Drift]:
    """Recompute ``spent`` (from the ledger) and ``reserved`` (from live holds) of
    every period of ``org`` (of ``budget_ids`` only, if given) that is open at
    ``now``; repair and report drift.

    Each period is locked while it is recomputed: an ingestion that already
    charged it has committed (so the ledger sum includes its events), and one
    that has not yet charged it waits and adds its amount after the repair."""
    now = now or timezone.now()
    drifts: list[Drift] = []
    periods = BudgetPeriod.objects.filter(
        budget__organization=org, budget__active=True, start__lte=now, end__gt=now
    )
    if budget_ids is not None:
        periods = periods.filter(budget_id__in=budget_ids)
    period_ids = list(periods.order_by("budget_id", "start").values_list("pk", flat=True))
    for period_id in period_ids:
        with transaction.atomic():
            period = (
                # The period's row only, not its budget's: a budget's change
                # holds that row while it waits for this one.
                BudgetPeriod.objects.select_for_update(of=("self",))
                .select_related("budget")
                .filter(pk=period_id)
                .first()
            )
            if period is None or period.end <= now:
                # Deleted with its budget meanwhile, or ended early (reckoned
                # another way now): nothing is counted on it any more.
                continue
            ledger = spend_between(period.budget, period.start, period.end)
            held = period_held(period_id)
            if period.spent != ledger or period.reserved != held:
                BudgetPeriod.objects.filter(pk=period_id).update(spent=ledger, reserved=held)
                drifts.append(
                    Drift(
                        period_id, period.budget.name, period.spent, ledger, period.reserved, held
                    )
                )
    if drifts:
        lines = [
            f"{d.budget}: spent {d.spent_before} -> {d.spent_after}, "
            f"reserved {d.reserved_before} -> {d.reserved_after}"
            for d in drifts
        ]
        alert_raise(
            org=org,
            spec=AlertSpec(
                kind=Alert.Kind.RECONCILIATION_DRIFT,
                dedup_key=f"drift:{now.isoformat()}",
                title=f"Repaired counter drift on {len(drifts)} budget period(s)",
                message="\n".join(lines),
                severity=Alert.Severity.WARNING,
                data={"periods": [d.period_id for d in drifts]},
            ),
        )
    return drifts
