"""Spend notices raised from the rollups: the daily summary, spend spikes and
unpriced usage. Each is an alert with a dedup key, so raising twice is harmless."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from uuid import UUID

from django.utils import timezone

from costs.models import UsageEvent
from costs.selectors.analytics import grouped, money, month_figures, rollups, totals
from profiles.models import Organization
from quotas.alerts import AlertSpec, alert_raise
from quotas.models import Alert
from quotas.selectors import budget_status, overview_budget_states

SUMMARY_HOUR = 8
SPIKE_WINDOW_DAYS = 7


def daily_summary_raise(*, org: Organization, now: datetime | None = None) -> Alert | None:
    """Yesterday's summary for ``org``, once, from 08:00 local time on."""
    now = now or timezone.now()
    local = now.astimezone(org.tz)
    if local.time() < time(SUMMARY_HOUR):
        return None
    today = local.date()
    yesterday = today - timedelta(days=1)
    dedup_key = f"daily_summary:{yesterday.isoformat()}"
    if Alert.objects.filter(organization=org, dedup_key=dedup_key).exists():
        return None  # sent already: the beat asks every quarter hour, all day
    day_qs = rollups(org=org, since=yesterday, until=today)
    day = totals(day_qs)
    month = month_figures(org=org, today=yesterday)
    states = overview_budget_states(org=org)
    near = [budget_status(s) for s in states]
    near = [b for b in near if Decimal(b["percent_used"]) >= 50]
    data = {
        "date": yesterday.isoformat(),
        "yesterday": str(day["cost"]),
        "yesterday_display": money(day["cost"]),
        "yesterday_events": day["requests"],
        "month": str(month.spent),
        "month_display": money(month.spent),
        "projected": str(month.projected),
        "projected_display": money(month.projected),
        "by_provider": [
            {"provider": r["provider"], "cost": str(r["cost"]), "cost_display": money(r["cost"])}
            for r in grouped(day_qs, "provider")
        ],
        "top_models": [
            {
                "provider": r["provider"],
                "model": r["model"],
                "cost": str(r["cost"]),
                "cost_display": money(r["cost"]),
            }
            for r in grouped(day_qs, "provider", "model", limit=5)
        ],
        "budgets_near": near,
    }
    return alert_raise(
        org=org,
        spec=AlertSpec(
            kind=Alert.Kind.DAILY_SUMMARY,
            dedup_key=dedup_key,
            title=f"AI spend for {yesterday.isoformat()}: {money(day['cost'])}",
            message=(
                f"Yesterday {money(day['cost'])} in {day['requests']} call(s); month to date "
                f"{money(month.spent)}, on track for {money(month.projected)}."
            ),
            data=data,
        ),
    )


def spend_spikes_raise(*, org: Organization, now: datetime | None = None) -> list[Alert]:
    """Alert when today's spend so far (for the organization, or one profile) is
    above ``org.spike_factor`` times its trailing 7-day daily average and above
    ``org.spike_min_cost``. One alert per scope and day."""
    now = now or timezone.now()
    today = now.astimezone(org.tz).date()
    window_start = today - timedelta(days=SPIKE_WINDOW_DAYS)
    raised: list[Alert] = []
    scopes: list[tuple[str, UUID | None, str]] = [("org", None, "The organization")]
    top_today = grouped(
        rollups(org=org, since=today, until=today + timedelta(days=1)).filter(
            profile__isnull=False
        ),
        "profile_id",
        "profile__external_id",
        limit=20,
    )
    scopes += [
        (
            f"profile:{r['profile__external_id']}",
            r["profile_id"],
            f"Profile {r['profile__external_id']}",
        )
        for r in top_today
    ]
    for scope, profile_id, label in scopes:
        base = rollups(org=org, since=window_start, until=today + timedelta(days=1))
        if profile_id is not None:
            base = base.filter(profile_id=profile_id)
        today_cost = totals(base.filter(day=today))["cost"]
        past = totals(base.filter(day__lt=today))["cost"]
        average = past / SPIKE_WINDOW_DAYS
        if today_cost < org.spike_min_cost or today_cost <= org.spike_factor * average:
            continue
        alert = alert_raise(
            org=org,
            spec=AlertSpec(
                kind=Alert.Kind.SPEND_SPIKE,
                # By the profile's id: its name may be 255 characters, the key 200.
                dedup_key=f"spike:{profile_id or 'org'}:{today.isoformat()}",
                title=f"Spend spike: {money(today_cost)} today vs {money(average)}/day average",
                message=(
                    f"{label} spent {money(today_cost)} so far today, more than "
                    f"{org.spike_factor}x its {SPIKE_WINDOW_DAYS}-day average of {money(average)}."
                ),
                severity=Alert.Severity.WARNING,
                data={"scope": scope, "today": str(today_cost), "average": str(average)},
            ),
        )
        if alert is not None:
            raised.append(alert)
    return raised


def unpriced_usage_raise(*, org: Organization, now: datetime | None = None) -> Alert | None:
    """One alert per local day listing the models recorded without a price."""
    now = now or timezone.now()
    today = now.astimezone(org.tz).date()
    models = list(
        UsageEvent.objects.filter(organization=org, priced=False, day=today)
        .order_by()
        .values_list("provider", "model_requested")
        .distinct()[:50]
    )
    if not models:
        return None
    names = ", ".join(f"{p}/{m}" for p, m in models)
    return alert_raise(
        org=org,
        spec=AlertSpec(
            kind=Alert.Kind.UNPRICED_USAGE,
            dedup_key=f"unpriced:{today.isoformat()}",
            title="Usage recorded for models without a price",
            message=(
                f"Recorded at cost 0 until a price exists: {names}. Add a price in the catalog, "
                "then reprice (admin action or `manage.py reprice`)."
            ),
            severity=Alert.Severity.WARNING,
            data={"models": [f"{p}/{m}" for p, m in models]},
        ),
    )
