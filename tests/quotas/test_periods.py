"""Budget periods come from the clock, in the organization's time zone.

Every expected bound below is worked out by hand from the zone's offset on that
date: a period starts at local midnight (daily), local Monday midnight (weekly)
or local midnight of the 1st (monthly), and ends where the next one starts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from quotas.periods import TOTAL_END, TOTAL_START, period_bounds

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
SANTIAGO = ZoneInfo("America/Santiago")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- UTC ---------------------------------------------------------------------------------


def test_daily_period_in_utc_runs_from_midnight_to_midnight():
    # 2026-11-22 10:00Z lies in [2026-11-22 00:00Z, 2026-11-23 00:00Z).
    assert period_bounds("daily", UTC_ZONE, utc(2026, 11, 22, 10)) == (
        utc(2026, 11, 22),
        utc(2026, 11, 23),
    )


def test_daily_period_includes_its_start_and_excludes_its_end():
    # Exactly midnight opens the new day; one microsecond before belongs to the old one.
    assert period_bounds("daily", UTC_ZONE, utc(2026, 11, 22))[0] == utc(2026, 11, 22)
    before = utc(2026, 11, 22) - timedelta(microseconds=1)
    assert period_bounds("daily", UTC_ZONE, before) == (utc(2026, 11, 21), utc(2026, 11, 22))


def test_weekly_period_starts_on_monday():
    # 2026-11-22 is a Sunday: its week began on Monday 2026-11-16 and ends Monday 2026-11-23.
    assert utc(2026, 11, 22).weekday() == 6
    assert period_bounds("weekly", UTC_ZONE, utc(2026, 11, 22, 23, 59)) == (
        utc(2026, 11, 16),
        utc(2026, 11, 23),
    )
    # Monday 00:00 itself opens a new week.
    assert period_bounds("weekly", UTC_ZONE, utc(2026, 11, 23)) == (
        utc(2026, 11, 23),
        utc(2026, 11, 30),
    )


def test_weekly_period_crosses_a_month_and_a_year_end():
    # Thursday 2026-12-31: the week runs Monday 2026-12-28 -> Monday 2027-01-04.
    assert period_bounds("weekly", UTC_ZONE, utc(2026, 12, 31, 12)) == (
        utc(2026, 12, 28),
        utc(2027, 1, 4),
    )


def test_monthly_period_in_utc_runs_from_the_first_to_the_first():
    assert period_bounds("monthly", UTC_ZONE, utc(2026, 11, 22, 10)) == (
        utc(2026, 11, 1),
        utc(2026, 12, 1),
    )


def test_total_period_never_ends():
    start, end = period_bounds("total", UTC_ZONE, utc(2026, 11, 22))
    assert (start, end) == (TOTAL_START, TOTAL_END)
    assert start <= utc(2026, 11, 22) < end
    # The same bounds from any zone and any instant: there is only one "total" period.
    assert period_bounds("total", TOKYO, utc(2999, 1, 1)) == (start, end)


def test_unknown_period_is_refused():
    with pytest.raises(ValueError, match="yearly"):
        period_bounds("yearly", UTC_ZONE, utc(2026, 11, 22))


def test_bounds_are_utc_aware_whatever_the_input_zone():
    at = datetime(2026, 11, 22, 10, tzinfo=BERLIN)
    start, end = period_bounds("daily", BERLIN, at)
    assert start.utcoffset() == timedelta(0)
    assert end.utcoffset() == timedelta(0)


# -- month ends and leap years -------------------------------------------------------------


def test_january_31_is_in_january_and_february_follows():
    # The last instant of January still belongs to January (31 days).
    jan = period_bounds("monthly", UTC_ZONE, utc(2026, 1, 31, 23, 59, 59))
    assert jan == (utc(2026, 1, 1), utc(2026, 2, 1))
    # February 2026 has 28 days: [02-01, 03-01).
    feb = period_bounds("monthly", UTC_ZONE, utc(2026, 2, 1))
    assert feb == (utc(2026, 2, 1), utc(2026, 3, 1))
    assert feb[1] - feb[0] == timedelta(days=28)


def test_december_rolls_over_into_january_of_the_next_year():
    assert period_bounds("monthly", UTC_ZONE, utc(2026, 12, 31, 12)) == (
        utc(2026, 12, 1),
        utc(2027, 1, 1),
    )
    assert period_bounds("monthly", UTC_ZONE, utc(2027, 1, 1)) == (utc(2027, 1, 1), utc(2027, 2, 1))


def test_every_month_of_2026_has_its_calendar_length():
    lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    for month, days in enumerate(lengths, start=1):
        start, end = period_bounds("monthly", UTC_ZONE, utc(2026, month, 15))
        assert start == utc(2026, month, 1)
        assert end - start == timedelta(days=days), month


def test_february_of_leap_year_2028_has_29_days():
    start, end = period_bounds("monthly", UTC_ZONE, utc(2028, 2, 29, 12))
    assert (start, end) == (utc(2028, 2, 1), utc(2028, 3, 1))
    assert end - start == timedelta(days=29)
    # The leap day is a day of its own, and March 1st follows it.
    assert period_bounds("daily", UTC_ZONE, utc(2028, 2, 29, 12)) == (
        utc(2028, 2, 29),
        utc(2028, 3, 1),
    )


# -- non-UTC zones -----------------------------------------------------------------------------


def test_daily_period_in_berlin_winter_starts_at_23_utc():
    # CET is UTC+1: local midnight of 2026-11-22 is 2026-11-21 23:00Z.
    assert period_bounds("daily", BERLIN, utc(2026, 11, 22, 10)) == (
        utc(2026, 11, 21, 23),
        utc(2026, 11, 22, 23),
    )
    # 2026-11-21 23:30Z is already 00:30 local on the 22nd.
    assert period_bounds("daily", BERLIN, utc(2026, 11, 21, 23, 30))[0] == utc(2026, 11, 21, 23)
    # 2026-11-21 22:59Z is still 23:59 local on the 21st.
    assert period_bounds("daily", BERLIN, utc(2026, 11, 21, 22, 59))[0] == utc(2026, 11, 20, 23)


def test_monthly_period_in_berlin_follows_local_first_of_month():
    # 2026-11-30 23:30Z is 00:30 CET on 2026-12-01: December already.
    assert period_bounds("monthly", BERLIN, utc(2026, 11, 30, 23, 30)) == (
        utc(2026, 11, 30, 23),
        utc(2026, 12, 31, 23),
    )


def test_monthly_period_in_berlin_across_the_october_dst_end_is_an_hour_longer():
    # October 2026 starts at 00:00 CEST (UTC+2) = 09-30 22:00Z and ends at 00:00 CET
    # (UTC+1) on 11-01 = 10-31 23:00Z (clocks went back on 2026-10-25): 31 days + 1 hour.
    start, end = period_bounds("monthly", BERLIN, utc(2026, 10, 15))
    assert (start, end) == (utc(2026, 9, 30, 22), utc(2026, 10, 31, 23))
    assert end - start == timedelta(days=31, hours=1)


def test_weekly_period_in_berlin_across_the_march_dst_start_is_an_hour_shorter():
    # Week of Monday 2026-03-23 (CET, UTC+1 -> 03-22 23:00Z) to Monday 2026-03-30
    # (CEST, UTC+2 -> 03-29 22:00Z); clocks went forward on Sunday 2026-03-29.
    start, end = period_bounds("weekly", BERLIN, utc(2026, 3, 25))
    assert (start, end) == (utc(2026, 3, 22, 23), utc(2026, 3, 29, 22))
    assert end - start == timedelta(days=6, hours=23)


def test_daily_period_in_tokyo_starts_at_15_utc_the_day_before():
    # JST is UTC+9 all year: local midnight of 2026-12-01 is 2026-11-30 15:00Z.
    assert period_bounds("daily", TOKYO, utc(2026, 11, 30, 15)) == (
        utc(2026, 11, 30, 15),
        utc(2026, 12, 1, 15),
    )
    assert period_bounds("monthly", TOKYO, utc(2026, 11, 30, 14, 59)) == (
        utc(2026, 10, 31, 15),
        utc(2026, 11, 30, 15),
    )


def test_new_york_daily_period_on_spring_forward_day_is_23_hours():
    # 2026-03-08: midnight EST (UTC-5) = 05:00Z; next midnight is EDT (UTC-4) = 03-09 04:00Z.
    start, end = period_bounds("daily", NEW_YORK, utc(2026, 3, 8, 12))
    assert (start, end) == (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))
    assert end - start == timedelta(hours=23)


def test_new_york_daily_period_on_fall_back_day_is_25_hours():
    # 2026-11-01: midnight EDT (UTC-4) = 04:00Z; next midnight is EST (UTC-5) = 11-02 05:00Z.
    start, end = period_bounds("daily", NEW_YORK, utc(2026, 11, 1, 12))
    assert (start, end) == (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    assert end - start == timedelta(hours=25)


def test_new_york_instant_in_the_repeated_hour_belongs_to_the_fall_back_day():
    # 05:30Z and 06:30Z on 2026-11-01 are both "01:30" local (EDT, then EST).
    for at in (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)):
        assert period_bounds("daily", NEW_YORK, at) == (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))


def test_new_york_monthly_periods_around_dst_changes():
    # March 2026: 03-01 00:00 EST = 05:00Z -> 04-01 00:00 EDT = 04:00Z: 31 days - 1 hour.
    start, end = period_bounds("monthly", NEW_YORK, utc(2026, 3, 20))
    assert (start, end) == (utc(2026, 3, 1, 5), utc(2026, 4, 1, 4))
    assert end - start == timedelta(days=30, hours=23)
    # November 2026: 11-01 00:00 EDT = 04:00Z -> 12-01 00:00 EST = 05:00Z: 30 days + 1 hour.
    start, end = period_bounds("monthly", NEW_YORK, utc(2026, 11, 20))
    assert (start, end) == (utc(2026, 11, 1, 4), utc(2026, 12, 1, 5))


def test_new_york_december_rolls_into_january_at_local_midnight():
    # 2027-01-01 03:00Z is 2026-12-31 22:00 EST: still December, which ends at 01-01 05:00Z.
    assert period_bounds("monthly", NEW_YORK, utc(2027, 1, 1, 3)) == (
        utc(2026, 12, 1, 5),
        utc(2027, 1, 1, 5),
    )


def test_santiago_day_whose_midnight_does_not_exist_starts_at_its_first_instant():
    # Chile springs forward at local 00:00 on 2026-09-06 (UTC-4 -> UTC-3): 00:00 never
    # happens, the day begins at 01:00 -03 = 04:00Z and ends at 09-07 00:00 -03 = 03:00Z.
    start, end = period_bounds("daily", SANTIAGO, utc(2026, 9, 6, 12))
    assert (start, end) == (utc(2026, 9, 6, 4), utc(2026, 9, 7, 3))
    assert end - start == timedelta(hours=23)
    # The day before ends exactly where this one starts: no gap, no overlap.
    assert period_bounds("daily", SANTIAGO, utc(2026, 9, 6, 3, 59))[1] == start


@pytest.mark.parametrize("zone", [UTC_ZONE, BERLIN, NEW_YORK, TOKYO, SANTIAGO])
@pytest.mark.parametrize("period", ["daily", "weekly", "monthly"])
def test_periods_tile_time_without_gaps_or_overlaps_through_2026(zone, period):
    # Walk 2026 hour by hour (both DST changes of every zone fall in it): each instant
    # lies in its period, and the period after a period starts exactly at its end.
    at = utc(2026, 1, 1)
    while at < utc(2027, 1, 1):
        start, end = period_bounds(period, zone, at)
        assert start <= at < end
        assert period_bounds(period, zone, end)[0] == end
        local_start = start.astimezone(zone)
        assert (local_start.hour, local_start.minute) in {(0, 0), (1, 0)}  # 01:00 only in a gap
        at += timedelta(hours=1)
