"""Budget periods from the clock, in the organization's time zone.

A period is [start, end) between local midnights (daily), local Monday
midnights (weekly) or local first-of-month midnights (monthly); ``total`` never
ends. Nothing is reset by a job: a new period is simply a new row keyed by its
start, so a missed beat cannot leave a budget unreset.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

TOTAL_START = datetime(2000, 1, 1, tzinfo=UTC)
TOTAL_END = datetime(3000, 1, 1, tzinfo=UTC)


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # Where midnight does not exist (a DST jump at 00:00), zoneinfo resolves the
    # wall time with the pre-transition offset: the first instant of that day.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def period_bounds(period: str, tz: ZoneInfo, at: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the ``period`` that contains ``at``."""
    if period == "total":
        return TOTAL_START, TOTAL_END
    return _bounds_of_day(period, tz, at.astimezone(tz).date())


@functools.lru_cache(maxsize=4096)
def _bounds_of_day(period: str, tz: ZoneInfo, local: date) -> tuple[datetime, datetime]:
    """``period_bounds`` for any moment of the local day ``local``: every check
    and charge asks for today's, so it is worked out once per day and zone."""
    if period == "daily":
        first, following = local, local + timedelta(days=1)
    elif period == "weekly":
        first = local - timedelta(days=local.weekday())
        following = first + timedelta(days=7)
    elif period == "monthly":
        first = local.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown period {period!r}")
    return _local_midnight(first, tz), _local_midnight(following, tz)
