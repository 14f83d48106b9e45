"""Spend figures, read from the daily rollups (never the ledger), for
dashboards, summaries and spike detection."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import QuerySet, Sum
from django.utils import timezone

from costs.models import DailyUsage
from profiles.models import Organization, Profile
from profiles.tenancy import for_org
from quotas.amounts import scaled

CENTS = Decimal("0.01")
MONEY = Decimal("0.000000000001")


def rollups(
    *,
    org: Organization,
    since: date | None,
    until: date | None,
    profile: Profile | None = None,
) -> QuerySet[DailyUsage]:
    """Rollup rows of ``org`` for local days in [since, until) (None: no bound)."""
    qs = for_org(DailyUsage.objects.all(), org)
    if since is not None:
        qs = qs.filter(day__gte=since)
    if until is not None:
        qs = qs.filter(day__lt=until)
    if profile is not None:
        qs = qs.filter(profile=profile)
    return qs


_SUMS = {
    "cost": Sum("cost"),
    "requests": Sum("events"),
    "input_tokens": Sum("input_tokens"),
    "output_tokens": Sum("output_tokens"),
    "revenue": Sum("revenue"),
}


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["cost"] = out.get("cost") or Decimal(0)
    out["revenue"] = out.get("revenue") or Decimal(0)
    for k in ("requests", "input_tokens", "output_tokens"):
        out[k] = int(out.get(k) or 0)
    return out


def totals(qs: QuerySet[DailyUsage]) -> dict[str, Any]:
    row = _clean(qs.aggregate(**_SUMS))
    row["margin"] = row["revenue"] - row["cost"]
    return row


def grouped(
    qs: QuerySet[DailyUsage], *fields: str, limit: int | None = None
) -> list[dict[str, Any]]:
    rows = qs.order_by().values(*fields).annotate(**_SUMS).order_by("-cost", *fields)
    if limit is not None:
        rows = rows[:limit]
    return [_clean(r) for r in rows]


def by_profile(qs: QuerySet[DailyUsage], *, limit: int = 10) -> list[dict[str, Any]]:
    rows = grouped(
        qs.filter(profile__isnull=False),
        "profile__external_id",
        "profile__display_name",
        limit=limit,
    )
    return [
        {
            **{k: v for k, v in r.items() if not k.startswith("profile__")},
            "profile": r["profile__external_id"],
            "display_name": r["profile__display_name"],
        }
        for r in rows
    ]


def by_day(qs: QuerySet[DailyUsage], since: date, until: date) -> list[dict[str, Any]]:
    """Every day in [since, until), zero-filled."""
    found = {r["day"]: r for r in grouped(qs, "day")}
    days = []
    day = since
    while day < until:
        row = found.get(day) or _clean({"day": day})
        days.append({"date": day.isoformat(), "cost": row["cost"], "requests": row["requests"]})
        day += timedelta(days=1)
    return days


def by_day_and_provider(qs: QuerySet[DailyUsage]) -> list[dict[str, Any]]:
    return grouped(qs, "day", "provider")


@dataclass(frozen=True)
class MonthFigures:
    spent: Decimal
    daily_average: Decimal
    projected: Decimal
    days_elapsed: int
    days_in_month: int


def month_figures(
    *, org: Organization, today: date | None = None, profile: Profile | None = None
) -> MonthFigures:
    """Month to date in the organization's time zone, its daily average over the
    days elapsed (today counts as one) and the linear projection to month end."""
    today = today or timezone.now().astimezone(org.tz).date()
    first = today.replace(day=1)
    days_in_month = calendar.monthrange(today.year, today.month)[1]
    elapsed = (today - first).days + 1
    spent = totals(rollups(org=org, since=first, until=today + timedelta(days=1), profile=profile))[
        "cost"
    ]
    average = scaled(spent, 1, elapsed, MONEY)
    projected = scaled(spent, days_in_month, elapsed, MONEY)
    return MonthFigures(spent, average, projected, elapsed, days_in_month)


def profile_month_spend(*, profile: Profile) -> dict[str, Decimal | int]:
    """Cost and events of ``profile`` in the current month of its organization's time zone."""
    today = timezone.now().astimezone(profile.organization.tz).date()
    agg = totals(
        rollups(
            org=profile.organization,
            since=today.replace(day=1),
            until=today + timedelta(days=1),
            profile=profile,
        )
    )
    return {"cost": agg["cost"], "events": agg["requests"]}


def money(value: Decimal) -> str:
    """Dollars for people: $1,234.57."""
    return f"${value.quantize(CENTS, rounding=ROUND_HALF_UP):,}"


def profile_daily_chart(*, profile: Profile, days: int = 30) -> dict[str, Any]:
    """Chart.js data: the profile's daily cost over the last ``days`` local days."""
    today = timezone.now().astimezone(profile.organization.tz).date()
    since = today - timedelta(days=days - 1)
    rows = by_day(
        rollups(
            org=profile.organization, since=since, until=today + timedelta(days=1), profile=profile
        ),
        since,
        today + timedelta(days=1),
    )
    return {
        "labels": [r["date"][5:] for r in rows],
        # Chart.js plots numbers; these strings are exact decimals it parses for drawing only.
        "datasets": [{"label": "Cost (USD)", "data": [f"{r['cost']:.6f}" for r in rows]}],
    }
