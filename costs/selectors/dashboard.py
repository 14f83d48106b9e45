"""The dashboard: spend figures for a range of local days, read from the daily
rollups and the budget counters, never by scanning the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Min
from django.utils import timezone

from costs.selectors.analytics import (
    by_day,
    by_profile,
    grouped,
    month_figures,
    rollups,
    totals,
)
from profiles.models import Organization, Profile
from quotas.models import Alert
from quotas.selectors import (
    budget_list,
    budget_states,
    budget_status,
    overview_budget_states,
)

RANGES = ("today", "7d", "30d", "90d", "mtd", "all")
MAX_DAYS = 3660


class RangeError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class DayRange:
    name: str
    first: date  # inclusive
    last: date  # inclusive

    @property
    def until(self) -> date:
        return self.last + timedelta(days=1)


def _as_local_date(value: str, org: Organization, field: str) -> date:
    try:
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), time(12))
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RangeError(field, "Use a date (2026-11-01) or an ISO 8601 timestamp.") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=org.tz)
    try:
        local = moment.astimezone(org.tz).date()
    except OverflowError as exc:  # past the calendar's ends once in the zone
        raise RangeError(field, _OUT_OF_RANGE) from exc
    if not _FIRST_DAY <= local <= _LAST_DAY:
        raise RangeError(field, _OUT_OF_RANGE)
    return local


# A day's bounds are worked out in the organization's zone and in UTC, and the
# day after the range is its end: the calendar's first and last days are out.
_FIRST_DAY = date.min + timedelta(days=1)
_LAST_DAY = date.max - timedelta(days=1)
_OUT_OF_RANGE = f"Use a day from {_FIRST_DAY.isoformat()} to {_LAST_DAY.isoformat()}."


def day_range(
    *,
    org: Organization,
    name: str | None = None,
    since: str | None = None,
    until: str | None = None,
    profile: Profile | None = None,
    today: date | None = None,
) -> DayRange:
    """The local days a request covers: a named range ending today, or since/until
    (both inclusive, dates or timestamps read in the organization's time zone)."""
    today = today or timezone.now().astimezone(org.tz).date()
    if since or until:
        first = _as_local_date(since, org, "since") if since else today - timedelta(days=29)
        last = _as_local_date(until, org, "until") if until else today
        if last < first:
            raise RangeError("until", "until is before since.")
        if (last - first).days > MAX_DAYS:
            raise RangeError("since", f"At most {MAX_DAYS} days.")
        return DayRange("custom", first, last)
    name = name or "30d"
    if name not in RANGES:
        raise RangeError("range", f"Use one of {', '.join(RANGES)}.")
    if name == "today":
        return DayRange(name, today, today)
    if name == "mtd":
        return DayRange(name, today.replace(day=1), today)
    if name == "all":
        qs = rollups(
            org=org, since=date(2000, 1, 1), until=today + timedelta(days=1), profile=profile
        )
        first = qs.aggregate(first=Min("day"))["first"] or today
        return DayRange(name, max(first, today - timedelta(days=MAX_DAYS)), today)
    days = int(name.removesuffix("d"))
    return DayRange(name, today - timedelta(days=days - 1), today)


def _money(value: Decimal) -> str:
    return f"{value:.12f}"


def _row(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    out = {k: row[k] for k in keys}
    out.update(
        cost=_money(row["cost"]),
        requests=row["requests"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
    )
    return out


def dashboard(
    *, org: Organization, days: DayRange, profile: Profile | None = None
) -> dict[str, Any]:
    """The contract's dashboard body for ``days`` (and one profile, if given)."""
    qs = rollups(org=org, since=days.first, until=days.until, profile=profile)
    total = totals(qs)
    month = month_figures(org=org, profile=profile)
    if profile is None:
        states = overview_budget_states(org=org)
    else:
        states = budget_states(
            org=org, budgets=list(budget_list(org=org, profile=profile).filter(active=True))
        )
    alerts = Alert.objects.filter(organization=org, read_at__isnull=True)
    if profile is not None:
        alerts = alerts.filter(profile=profile)
    tz = org.tz
    return {
        "range": days.name,
        "since": datetime.combine(days.first, datetime.min.time(), tzinfo=tz).isoformat(),
        "until": datetime.combine(days.until, datetime.min.time(), tzinfo=tz).isoformat(),
        "timezone": org.timezone,
        "currency": org.currency,
        "profile": profile.external_id if profile else None,
        "totals": {
            "cost": _money(total["cost"]),
            "requests": total["requests"],
            "input_tokens": total["input_tokens"],
            "output_tokens": total["output_tokens"],
            "revenue": _money(total["revenue"]),
            "margin": _money(total["margin"]),
        },
        "by_provider": [_row(r, "provider") for r in grouped(qs, "provider")],
        "by_model": [
            _row(r, "provider", "model") for r in grouped(qs, "provider", "model", limit=50)
        ],
        "by_operation": [_row(r, "operation") for r in grouped(qs, "operation")],
        "by_profile": []
        if profile
        else [_row(r, "profile", "display_name") for r in by_profile(qs)],
        "by_day": [
            {"date": d["date"], "cost": _money(d["cost"]), "requests": d["requests"]}
            for d in by_day(qs, days.first, days.until)
        ],
        "by_day_provider": [
            {"date": r["day"].isoformat(), "provider": r["provider"], "cost": _money(r["cost"])}
            for r in grouped(qs, "day", "provider")
        ],
        "month": {
            "spent": _money(month.spent),
            "daily_average": _money(month.daily_average),
            "projected": _money(month.projected),
            "days_elapsed": month.days_elapsed,
            "days_in_month": month.days_in_month,
        },
        "budgets": [budget_status(s) for s in states],
        "alerts": {"unread": alerts.count()},
    }
