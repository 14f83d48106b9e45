"""Alerts: raising them exactly once, and evaluating budget thresholds.

An alert's ``dedup_key`` is unique per organization, so two evaluations racing
(after-commit hook and beat, or two beats) make one alert: the loser's INSERT
hits the unique index and it moves on. Each new alert gets its deliveries
(email to owners, admins and extra recipients; the webhook if configured) in
the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from profiles.models import Organization, Profile
from profiles.selectors import alert_recipients
from quotas.amounts import MICROSECOND, WIDE, percent_of, scaled, to_tenth
from quotas.models import Alert, Budget, BudgetPeriod, Delivery
from quotas.services import BudgetState, active_budgets, current_states


@dataclass(frozen=True)
class AlertSpec:
    kind: str
    dedup_key: str
    title: str
    message: str
    severity: str = Alert.Severity.INFO
    budget: Budget | None = None
    period: BudgetPeriod | None = None
    threshold: int | None = None
    profile: Profile | None = None
    data: dict[str, Any] | None = None


def alert_raise(*, org: Organization, spec: AlertSpec) -> Alert | None:
    """Create the alert and its deliveries unless one with the same dedup key
    exists; returns the new alert, or None when it already existed."""
    now = timezone.now()
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                organization=org,
                kind=spec.kind,
                dedup_key=spec.dedup_key,
                title=spec.title,
                message=spec.message,
                severity=spec.severity,
                budget=spec.budget,
                period=spec.period,
                threshold=spec.threshold,
                profile=spec.profile,
                data=spec.data or {},
            )
            deliveries = [
                Delivery(
                    alert=alert, channel=Delivery.Channel.EMAIL, target=target, next_attempt_at=now
                )
                for target in email_targets(alert_recipients(org=org))
            ]
            if org.webhook_url:
                deliveries.append(
                    Delivery(
                        alert=alert,
                        channel=Delivery.Channel.WEBHOOK,
                        target=org.webhook_url,
                        next_attempt_at=now,
                    )
                )
            Delivery.objects.bulk_create(deliveries)
    except IntegrityError:
        return None
    return alert


def email_targets(recipients: Iterable[str]) -> list[str]:
    """The recipients as the targets of email deliveries: comma-separated, in
    order, as many to a delivery as its target holds (an organization with
    twenty owners and admins went past it, and the alert was lost)."""
    limit = Delivery._meta.get_field("target").max_length or 500
    targets: list[str] = []
    for address in sorted(recipients):
        if targets and len(targets[-1]) + 2 + len(address) <= limit:
            targets[-1] += f", {address}"
        else:
            targets.append(address)
    return targets


def _fmt(budget: Budget, value: Decimal) -> str:
    if budget.is_money:
        return f"${value.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP, context=WIDE):,}"
    unit = budget.get_metric_display().lower()
    return f"{value.normalize():,f} {unit}"


def projection(period: BudgetPeriod, now: datetime) -> Decimal | None:
    """Linear projection of ``spent`` to the period's end; None for open-ended periods.
    Times in whole microseconds: a float of seconds would bring its binary
    noise into the figure."""
    total = (period.end - period.start) // MICROSECOND
    elapsed = (min(now, period.end) - period.start) // MICROSECOND
    if total <= 0 or elapsed <= 0 or total > 400 * 86400 * 10**6:
        return None
    return scaled(period.spent, total, elapsed, Decimal("0.000000000001"))


# How long after its end a period is still evaluated: the beat evaluates
# every five minutes, and a run may be late.
JUST_ENDED = timedelta(minutes=30)


def thresholds_evaluate(
    *, org: Organization, budget_ids: list[str] | None = None, now: datetime | None = None
) -> list[Alert]:
    """Raise an alert for every threshold the current period of each budget has
    reached (spent against the limit; holds don't count), and a period that
    ended in the last ``JUST_ENDED`` (an event at 23:59:59 takes a daily
    budget over after its evaluation has moved on to the next day).
    Idempotent."""
    now = now or timezone.now()
    budgets = active_budgets(org)
    if budget_ids is not None:
        wanted = {str(b) for b in budget_ids}
        budgets = [b for b in budgets if str(b.pk) in wanted]
    states = list(current_states(org, budgets, now))
    by_id = {b.pk: b for b in budgets}
    ended = BudgetPeriod.objects.filter(
        budget__in=budgets, end__gt=now - JUST_ENDED, end__lte=now
    ).exclude(pk__in=[s.period.pk for s in states])
    states += [BudgetState(by_id[p.budget_id], p) for p in ended]
    raised: list[Alert] = []
    for state in states:
        budget, period = state.budget, state.period
        percent = percent_of(period.spent, budget.limit)
        for threshold in sorted(budget.thresholds):
            if percent < threshold:
                break
            exceeded = threshold >= 100
            projected = projection(period, now)
            data = {
                "budget_id": str(budget.pk),
                "budget": budget.name,
                "metric": budget.metric,
                "period": budget.period,
                "period_start": period.start.isoformat(),
                "resets_at": period.end.isoformat(),
                "limit": str(budget.limit),
                "spent": str(period.spent),
                "percent": f"{to_tenth(percent)}",
                "threshold": threshold,
                "projected": str(projected) if projected is not None else None,
                "limit_display": _fmt(budget, budget.limit),
                "spent_display": _fmt(budget, period.spent),
                "projected_display": _fmt(budget, projected) if projected is not None else None,
                "action": budget.action,
            }
            verb = "exceeded" if exceeded else f"reached {threshold}% of"
            alert = alert_raise(
                org=org,
                spec=AlertSpec(
                    kind=Alert.Kind.BUDGET_EXCEEDED if exceeded else Alert.Kind.THRESHOLD_REACHED,
                    dedup_key=f"threshold:{budget.pk}:{period.start.isoformat()}:{threshold}",
                    title=f"{budget.name} {verb} its {budget.get_period_display().lower()} limit",
                    message=(
                        f"{budget.name} has used {data['spent_display']} of {data['limit_display']} "
                        f"({data['percent']}%) this period."
                    ),
                    severity=Alert.Severity.CRITICAL if exceeded else Alert.Severity.WARNING,
                    budget=budget,
                    period=period,
                    threshold=threshold,
                    profile=budget.profile,
                    data=data,
                ),
            )
            if alert is not None:
                raised.append(alert)
    return raised


def alert_mark_read(
    *,
    org: Organization,
    alert_ids: Sequence[uuid.UUID] | None = None,
    profile: Profile | None = None,
) -> int:
    """Mark ``org``'s alerts read (those of ``alert_ids``, or all); with
    ``profile``, only that profile's."""
    qs = Alert.objects.filter(organization=org, read_at__isnull=True)
    if alert_ids is not None:
        qs = qs.filter(pk__in=alert_ids)
    if profile is not None:
        qs = qs.filter(profile=profile)
    return qs.update(read_at=timezone.now())


def alert_resolve(*, org: Organization, alert_ids: Sequence[uuid.UUID]) -> int:
    now = timezone.now()
    Alert.objects.filter(organization=org, pk__in=alert_ids, read_at__isnull=True).update(
        read_at=now
    )
    return Alert.objects.filter(
        organization=org, pk__in=alert_ids, resolved_at__isnull=True
    ).update(resolved_at=now)
