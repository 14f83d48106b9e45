"""The dashboard API: GET /api/v1/dashboard and /api/v1/profiles/<id>/dashboard.

Every figure is compared with sums worked out here from the events the tests
record (costs from published prices: gpt-4o $2.50/M input, $10/M output;
claude-sonnet-4-5 $3/M in, $15/M out; gpt-4o-mini $0.15/M in, $0.60/M out;
gemini-2.5-flash $0.30/M in, $2.50/M out; "acme-ai" is client-priced), bucketed
into local days of the organization's time zone computed here, and against an
independent GROUP BY over the ledger within local-day bounds.

Two tenants: acme (UTC) and globex (Asia/Tokyo, UTC+9), with events placed on
both sides of each zone's midnight, of the first of the month and of the first
day of every named range. Three clocks:

- 2026-11-22 10:00Z: both zones are on 2026-11-22;
- 2026-11-22 16:00Z: UTC is on 11-22, Tokyo already on 11-23;
- 2026-11-30 15:30Z: UTC is on 11-30, Tokyo on 12-01 (a new month there).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection
from django.db.models import Count, Sum
from django.test.utils import CaptureQueriesContext

from costs.models import UsageEvent
from costs.services import EventInput, usage_record
from profiles.services import profile_get_or_create
from quotas.models import Alert
from quotas.services import budget_create
from tests.factories import AlertFactory, make_key

pytestmark = pytest.mark.django_db

URL = "/api/v1/dashboard"
MILLION = Decimal(1_000_000)
TWELVE_PLACES = Decimal("0.000000000001")

# Published prices, $ per million tokens: (input, output).
PRICES: dict[tuple[str, str], tuple[Decimal, Decimal]] = {
    ("openai", "gpt-4o"): (Decimal("2.50"), Decimal("10")),
    ("openai", "gpt-4o-mini"): (Decimal("0.15"), Decimal("0.60")),
    ("anthropic", "claude-sonnet-4-5"): (Decimal("3"), Decimal("15")),
    ("google", "gemini-2.5-flash"): (Decimal("0.30"), Decimal("2.50")),
}


def Z(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@dataclass(frozen=True)
class Ev:
    at: datetime
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    operation: str = "chat"
    profile: str | None = None
    revenue: Decimal | None = None
    client_cost: Decimal | None = None  # for a provider the catalog does not price

    @property
    def cost(self) -> Decimal:
        if self.client_cost is not None:
            return self.client_cost
        per_in, per_out = PRICES[(self.provider, self.model)]
        # All our token counts stay below claude's 200k-token tier.
        return (self.input_tokens * per_in + self.output_tokens * per_out) / MILLION


GPT4O = ("openai", "gpt-4o")
CLAUDE = ("anthropic", "claude-sonnet-4-5")


def ledger_events(k: int, own: Ev) -> list[Ev]:
    """The same instants for both tenants; token counts times ``k`` so the
    tenants' sums differ; ``own`` is an event with a model and profile only
    this tenant has."""
    events = [
        # Around UTC midnight 11-21 / 11-22.
        Ev(Z(2026, 11, 21, 23, 59, 59), *GPT4O, 1000 * k, 500 * k, profile="p-01"),
        Ev(
            Z(2026, 11, 22, 0, 0, 0),
            *GPT4O,
            2000 * k,
            100 * k,
            profile="p-02",
            revenue=Decimal("0.05"),
        ),
        # Around Tokyo midnight 11-21 / 11-22 (14:59:59Z / 15:00:00Z) and 11-22 / 11-23.
        Ev(Z(2026, 11, 21, 14, 59, 59), *CLAUDE, 1000 * k, 200 * k, profile="p-03"),
        Ev(
            Z(2026, 11, 21, 15, 0, 0),
            *CLAUDE,
            3000 * k,
            400 * k,
            operation="summarize",
            profile="p-01",
            revenue=Decimal("0.10"),
        ),
        Ev(Z(2026, 11, 22, 14, 59, 59), *GPT4O, 400 * k, 300 * k, profile="p-02"),
        Ev(
            Z(2026, 11, 22, 15, 0, 0),
            "acme-ai",
            "m1",
            operation="image",
            profile="p-04",
            client_cost=Decimal("0.5") * k,
        ),
        # Around the first of November in both zones.
        Ev(Z(2026, 10, 31, 14, 59, 59), *GPT4O, 5000 * k, 0),
        Ev(Z(2026, 10, 31, 15, 0, 0), *GPT4O, 7000 * k, 1000 * k, profile="p-05"),
        Ev(Z(2026, 10, 31, 23, 59, 59), *CLAUDE, 100 * k, 100 * k),
        Ev(
            Z(2026, 11, 1, 0, 0, 0),
            *GPT4O,
            2000 * k,
            2000 * k,
            profile="p-06",
            revenue=Decimal("1"),
        ),
        # Around the first day of 7d (11-16), 30d (10-24) and 90d (08-25) at 11-22.
        *(
            Ev(at, *GPT4O, n * k, 0)
            for at, n in [
                (Z(2026, 11, 15, 14, 59, 59), 110),
                (Z(2026, 11, 15, 15, 0, 0), 120),
                (Z(2026, 11, 15, 23, 59, 59), 130),
                (Z(2026, 11, 16, 0, 0, 0), 140),
                (Z(2026, 10, 23, 14, 59, 59), 150),
                (Z(2026, 10, 23, 15, 0, 0), 160),
                (Z(2026, 10, 23, 23, 59, 59), 170),
                (Z(2026, 10, 24, 0, 0, 0), 180),
                (Z(2026, 8, 24, 14, 59, 59), 190),
                (Z(2026, 8, 24, 15, 0, 0), 200),
                (Z(2026, 8, 24, 23, 59, 59), 210),
                (Z(2026, 8, 25, 0, 0, 0), 220),
            ]
        ),
        # Around Tokyo's first of December (the third clock's "today" there).
        Ev(Z(2026, 11, 30, 14, 59, 59), *CLAUDE, 600 * k, 60 * k, profile="p-07"),
        Ev(
            Z(2026, 11, 30, 15, 0, 0),
            *GPT4O,
            800 * k,
            80 * k,
            profile="p-08",
            revenue=Decimal("0.02"),
        ),
        # The first event ever, and one after every clock.
        Ev(Z(2025, 6, 1, 12, 0, 0), *GPT4O, 1000 * k, 1000 * k),
        Ev(Z(2026, 12, 5, 0, 0, 0), *GPT4O, 999 * k, 999 * k, profile="p-01"),
        # Twelve profiles on one day, so the top 10 leaves two out.
        *(
            Ev(Z(2026, 11, 20, 12, 0, i), *GPT4O, 1000 * i * k, 10 * k, profile=f"p-{i:02d}")
            for i in range(1, 13)
        ),
        own,
    ]
    return events


ACME_ONLY = Ev(Z(2026, 11, 20, 3), "openai", "gpt-4o-mini", 10_000, 1_000, profile="acme-only")
GLOBEX_ONLY = Ev(
    Z(2026, 11, 20, 3), "google", "gemini-2.5-flash", 10_000, 1_000, profile="globex-only"
)


@dataclass(frozen=True)
class Scenario:
    id: str
    now: datetime
    today: dict[str, date]  # org slug -> local date at ``now``
    days_in_month: dict[str, int]


SCENARIOS = [
    Scenario(
        "nov22-both-zones-same-day",
        Z(2026, 11, 22, 10),
        {"acme": date(2026, 11, 22), "globex": date(2026, 11, 22)},
        {"acme": 30, "globex": 30},
    ),
    Scenario(
        "nov22-tokyo-already-nov23",
        Z(2026, 11, 22, 16),
        {"acme": date(2026, 11, 22), "globex": date(2026, 11, 23)},
        {"acme": 30, "globex": 30},
    ),
    Scenario(
        "nov30-tokyo-already-dec01",
        Z(2026, 11, 30, 15, 30),
        {"acme": date(2026, 11, 30), "globex": date(2026, 12, 1)},
        {"acme": 30, "globex": 31},
    ),
]
TENANTS = ["acme", "globex"]


@dataclass
class Org:
    tenant: Any
    tz: ZoneInfo
    events: list[Ev]
    today: date
    days_in_month: int
    budgets: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def scenario() -> Scenario:
    return SCENARIOS[0]


def _record(org, slug: str, events: list[Ev]) -> None:
    results = usage_record(
        org=org,
        events=[
            EventInput(
                idempotency_key=f"{slug}-{i}",
                request_hash=f"{slug}-{i}",
                provider=e.provider,
                model=e.model,
                operation=e.operation,
                usage={"input_tokens": e.input_tokens, "output_tokens": e.output_tokens}
                if e.client_cost is None
                else {"images": 1},
                occurred_at=e.at,
                profile=e.profile,
                cost=e.client_cost,
                revenue=e.revenue,
            )
            for i, e in enumerate(events)
        ],
    )
    assert [r.status for r in results] == [201] * len(events)


def _budgets(org, profile) -> dict[str, Any]:
    return {
        "Monthly spend": budget_create(
            org=org, name="Monthly spend", metric="cost", period="monthly", limit=Decimal("5")
        ),
        "Daily spend": budget_create(
            org=org, name="Daily spend", metric="cost", period="daily", limit=Decimal("0.3")
        ),
        "p-01 monthly": budget_create(
            org=org,
            name="p-01 monthly",
            profile=profile,
            metric="cost",
            period="monthly",
            limit=Decimal("0.25"),
        ),
        "Requests per day": budget_create(
            org=org, name="Requests per day", metric="requests", period="daily", limit=Decimal(40)
        ),
        "Paused": budget_create(
            org=org, name="Paused", metric="cost", period="monthly", limit=Decimal(1), active=False
        ),
    }


def _alert(org, key: str, *, read: bool = False, profile=None) -> Alert:
    return AlertFactory(
        organization=org,
        profile=profile,
        dedup_key=key,
        read_at=datetime.now(UTC) if read else None,
    )


@pytest.fixture
def world(scenario, catalog, tenant_a, tenant_b) -> Iterator[dict[str, Org]]:
    """Both tenants' budgets, ledgers and alerts, recorded with the clock frozen at
    the scenario's instant (which stays frozen for the test)."""
    with time_machine.travel(scenario.now, tick=False):
        orgs = {}
        for slug, tenant, k, own in [
            ("acme", tenant_a, 1, ACME_ONLY),
            ("globex", tenant_b, 2, GLOBEX_ONLY),
        ]:
            events = ledger_events(k, own)
            _record(tenant.org, slug, events)
            # Created after the usage, each budget opens its current period from the
            # ledger once (cheaper than charging a period per day of history).
            budgets = _budgets(tenant.org, p01_of(tenant.org))
            orgs[slug] = Org(
                tenant,
                ZoneInfo(tenant.org.timezone),
                events,
                scenario.today[slug],
                scenario.days_in_month[slug],
                budgets,
            )
        acme, globex = orgs["acme"].tenant.org, orgs["globex"].tenant.org
        _alert(acme, "a-unread-1")
        _alert(acme, "a-unread-p01", profile=p01_of(acme))
        _alert(acme, "a-read", read=True)
        _alert(globex, "g-unread-1")
        _alert(globex, "g-unread-2")
        _alert(globex, "g-unread-3")
        yield orgs


def p01_of(org):
    return profile_get_or_create(org=org, external_id="p-01")


# -- expected figures, worked out here --------------------------------------------------


def local_day(ev: Ev, tz: ZoneInfo) -> date:
    return ev.at.astimezone(tz).date()


def within(org: Org, first: date, last: date, profile: str | None = None) -> list[Ev]:
    return [
        e
        for e in org.events
        if first <= local_day(e, org.tz) <= last and (profile is None or e.profile == profile)
    ]


def _sums(evs: list[Ev]) -> dict[str, Any]:
    return {
        "cost": sum((e.cost for e in evs), Decimal(0)),
        "requests": len(evs),
        "input_tokens": sum(e.input_tokens for e in evs),
        "output_tokens": sum(e.output_tokens for e in evs),
    }


def expected_totals(evs: list[Ev]) -> dict[str, Any]:
    out = _sums(evs)
    out["revenue"] = sum((e.revenue or Decimal(0) for e in evs), Decimal(0))
    out["margin"] = out["revenue"] - out["cost"]
    return out


def expected_groups(evs: list[Ev], *keys: str, limit: int | None = None) -> list[tuple]:
    """Rows (key..., cost, requests, input, output) by cost descending, then key."""
    groups: dict[tuple, list[Ev]] = {}
    for e in evs:
        groups.setdefault(tuple(getattr(e, k) for k in keys), []).append(e)
    rows = []
    for key, members in groups.items():
        s = _sums(members)
        rows.append((*key, s["cost"], s["requests"], s["input_tokens"], s["output_tokens"]))
    rows.sort(key=lambda r: (-r[len(keys)], *r[: len(keys)]))
    return rows[:limit] if limit else rows


def expected_by_day(evs: list[Ev], tz: ZoneInfo, first: date, last: date) -> list[tuple]:
    rows = []
    day = first
    while day <= last:
        todays = [e for e in evs if local_day(e, tz) == day]
        rows.append((day.isoformat(), sum((e.cost for e in todays), Decimal(0)), len(todays)))
        day += timedelta(days=1)
    return rows


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def ledger_group_by(org: Org, first: date, last: date, *fields: str) -> list[tuple]:
    """The same figures straight from the ledger, within local-day bounds."""
    qs = UsageEvent.objects.filter(
        organization=org.tenant.org,
        occurred_at__gte=local_midnight(first, org.tz),
        occurred_at__lt=local_midnight(last + timedelta(days=1), org.tz),
    )
    sums = {
        "c": Sum("cost"),
        "n": Count("id"),
        "i": Sum("input_tokens"),
        "o": Sum("output_tokens"),
        "r": Sum("revenue"),
    }
    if not fields:
        row = qs.aggregate(**sums)
        return [(row["c"] or Decimal(0), row["n"], row["i"] or 0, row["o"] or 0, row["r"])]
    rows = qs.values(*fields).annotate(**sums).order_by()
    out = [(*(r[f] for f in fields), r["c"], r["n"], r["i"], r["o"]) for r in rows]
    out.sort(key=lambda r: (-r[len(fields)], *r[: len(fields)]))
    return out


# -- reading the response -----------------------------------------------------------------


def get(tenant, params: dict[str, str] | None = None, *, url: str = URL, secret=None) -> dict:
    resp = tenant.client(secret).get(url, params or {})
    assert resp.status_code == 200, resp.content
    return resp.json()


def money(value: Any) -> Decimal:
    assert isinstance(value, str), f"money must be a JSON string, got {value!r}"
    return Decimal(value)


def rows(body_rows: list[dict], *keys: str) -> list[tuple]:
    return [
        (
            *(r[k] for k in keys),
            money(r["cost"]),
            r["requests"],
            r["input_tokens"],
            r["output_tokens"],
        )
        for r in body_rows
    ]


def api_totals(body: dict) -> dict[str, Any]:
    t = body["totals"]
    return {
        "cost": money(t["cost"]),
        "requests": t["requests"],
        "input_tokens": t["input_tokens"],
        "output_tokens": t["output_tokens"],
        "revenue": money(t["revenue"]),
        "margin": money(t["margin"]),
    }


# -- the range matrix ---------------------------------------------------------------------

# name -> (query, first and last local day for a tenant: fn(org) -> (first, last)).
RANGE_CASES: dict[str, tuple[dict[str, str], Any]] = {
    "today": ({"range": "today"}, lambda o: (o.today, o.today)),
    "7d": ({"range": "7d"}, lambda o: (o.today - timedelta(days=6), o.today)),
    "30d": ({"range": "30d"}, lambda o: (o.today - timedelta(days=29), o.today)),
    "90d": ({"range": "90d"}, lambda o: (o.today - timedelta(days=89), o.today)),
    "mtd": ({"range": "mtd"}, lambda o: (o.today.replace(day=1), o.today)),
    # The first local day with usage (2025-06-01 12:00Z is that date in both zones).
    "all": ({"range": "all"}, lambda o: (date(2025, 6, 1), o.today)),
    "since-until-dates": (
        {"since": "2026-11-01", "until": "2026-11-21"},
        lambda o: (date(2026, 11, 1), date(2026, 11, 21)),
    ),
    # Timestamps name the local days they fall on: 2026-10-31T15:00Z is 10-31 in
    # UTC but 11-01 in Tokyo; 2026-11-21T14:59:59Z is 11-21 in both.
    "since-until-timestamps": (
        {"since": "2026-10-31T15:00:00Z", "until": "2026-11-21T14:59:59Z"},
        lambda o: (
            date(2026, 10, 31) if o.tz.key == "UTC" else date(2026, 11, 1),
            date(2026, 11, 21),
        ),
    ),
    "since-alone-ends-today": ({"since": "2026-11-16"}, lambda o: (date(2026, 11, 16), o.today)),
}


@pytest.mark.parametrize("slug", TENANTS)
@pytest.mark.parametrize("case", list(RANGE_CASES))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_dashboard_figures_equal_the_ledger_sums_over_the_local_days_of_the_range(
    world, scenario, case, slug
):
    org = world[slug]
    query, bounds = RANGE_CASES[case]
    first, last = bounds(org)
    body = get(org.tenant, query)
    evs = within(org, first, last)
    assert evs or case == "today", "the range should hold some events"

    if "range" in query:
        assert body["range"] == query["range"]
    assert body["currency"] == "USD"
    assert datetime.fromisoformat(body["since"]) == local_midnight(first, org.tz)
    assert datetime.fromisoformat(body["until"]) == local_midnight(last + timedelta(days=1), org.tz)
    assert datetime.fromisoformat(body["since"]).utcoffset() == org.tz.utcoffset(
        datetime(2026, 11, 1)
    )

    # Totals: hand sums, and the ledger agrees with them.
    want = expected_totals(evs)
    assert api_totals(body) == want
    assert ledger_group_by(org, first, last) == [
        (
            want["cost"],
            want["requests"],
            want["input_tokens"],
            want["output_tokens"],
            want["revenue"] or None,
        )
    ]

    assert rows(body["by_provider"], "provider") == expected_groups(evs, "provider")
    assert rows(body["by_provider"], "provider") == ledger_group_by(org, first, last, "provider")
    assert rows(body["by_model"], "provider", "model") == expected_groups(evs, "provider", "model")
    assert rows(body["by_operation"], "operation") == expected_groups(evs, "operation")
    profiled = [e for e in evs if e.profile is not None]
    assert rows(body["by_profile"], "profile") == expected_groups(profiled, "profile", limit=10)

    by_day = [(d["date"], money(d["cost"]), d["requests"]) for d in body["by_day"]]
    assert len(by_day) == (last - first).days + 1
    assert by_day == expected_by_day(evs, org.tz, first, last)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_month_figures_are_month_to_date_in_the_org_zone_with_average_and_projection(
    world, scenario
):
    for org in world.values():
        body = get(org.tenant, {"range": "7d"})
        evs = within(org, org.today.replace(day=1), org.today)
        spent = sum((e.cost for e in evs), Decimal(0))
        elapsed = org.today.day
        month = body["month"]
        assert money(month["spent"]) == spent
        assert month["days_elapsed"] == elapsed
        assert month["days_in_month"] == org.days_in_month
        assert money(month["daily_average"]) == (spent / elapsed).quantize(
            TWELVE_PLACES, rounding=ROUND_HALF_UP
        )
        assert money(month["projected"]) == (spent * org.days_in_month / elapsed).quantize(
            TWELVE_PLACES, rounding=ROUND_HALF_UP
        )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_budgets_show_each_active_budget_with_what_its_current_local_period_spent(world, scenario):
    for org in world.values():
        body = get(org.tenant)
        statuses = {b["name"]: b for b in body["budgets"]}
        assert set(statuses) == {
            "Monthly spend",
            "Daily spend",
            "p-01 monthly",
            "Requests per day",
        }  # "Paused" is inactive

        month_start = local_midnight(org.today.replace(day=1), org.tz)
        month_end = local_midnight(
            (org.today.replace(day=1) + timedelta(days=32)).replace(day=1), org.tz
        )
        day_start = local_midnight(org.today, org.tz)
        day_end = local_midnight(org.today + timedelta(days=1), org.tz)

        def between(start, end, profile=None):
            return [
                e
                for e in org.events
                if start <= e.at < end and (profile is None or e.profile == profile)
            ]

        expected = {
            "Monthly spend": (
                sum((e.cost for e in between(month_start, month_end)), Decimal(0)),
                Decimal("5"),
            ),
            "Daily spend": (
                sum((e.cost for e in between(day_start, day_end)), Decimal(0)),
                Decimal("0.3"),
            ),
            "p-01 monthly": (
                sum((e.cost for e in between(month_start, month_end, "p-01")), Decimal(0)),
                Decimal("0.25"),
            ),
            "Requests per day": (Decimal(len(between(day_start, day_end))), Decimal(40)),
        }
        for name, (spent, limit) in expected.items():
            status = statuses[name]
            assert Decimal(status["spent"]) == spent, (org.tz, name)
            assert Decimal(status["limit"]) == limit
            assert Decimal(status["remaining"]) == max(limit - spent, Decimal(0))
            assert Decimal(status["percent_used"]) == (spent * 100 / limit).quantize(
                Decimal("0.1"), rounding=ROUND_HALF_UP
            ), (org.tz, name)
        assert datetime.fromisoformat(statuses["Daily spend"]["period_start"]) == day_start
        assert datetime.fromisoformat(statuses["Monthly spend"]["period_start"]) == month_start


def test_by_profile_lists_only_the_top_10_profiles_by_cost(world):
    org = world["acme"]
    body = get(org.tenant, {"range": "30d"})
    evs = [e for e in within(org, org.today - timedelta(days=29), org.today) if e.profile]
    everyone = expected_groups(evs, "profile")
    assert len(everyone) > 10  # so the cut matters
    listed = rows(body["by_profile"], "profile")
    assert listed == everyone[:10]
    costs = [r[1] for r in listed]
    assert costs == sorted(costs, reverse=True)
    assert max(r[1] for r in everyone[10:]) <= costs[-1]


def test_alerts_unread_counts_only_this_orgs_unread_alerts(world):
    assert get(world["acme"].tenant)["alerts"] == {"unread": 2}
    assert get(world["globex"].tenant)["alerts"] == {"unread": 3}


def test_default_range_is_30_days(world):
    org = world["acme"]
    body = get(org.tenant)
    assert body["range"] == "30d"
    assert len(body["by_day"]) == 30
    assert api_totals(body) == expected_totals(
        within(org, org.today - timedelta(days=29), org.today)
    )


# -- one profile ---------------------------------------------------------------------------


@pytest.mark.parametrize("slug", TENANTS)
@pytest.mark.parametrize("case", ["30d", "all", "since-until-timestamps"])
def test_profile_dashboard_covers_only_that_profile(world, case, slug):
    org = world[slug]
    query, bounds = RANGE_CASES[case]
    first, last = bounds(org)
    if case == "all":  # from the profile's own first day with usage
        first = min(
            local_day(e, org.tz)
            for e in org.events
            if e.profile == "p-01" and local_day(e, org.tz) <= org.today
        )
    evs = within(org, first, last, profile="p-01")
    assert evs, "p-01 should have usage in the range"

    for body in (
        get(org.tenant, query, url="/api/v1/profiles/p-01/dashboard"),
        get(org.tenant, {**query, "profile": "p-01"}),
    ):
        assert body["profile"] == "p-01"
        assert api_totals(body) == expected_totals(evs)
        assert rows(body["by_provider"], "provider") == expected_groups(evs, "provider")
        assert rows(body["by_model"], "provider", "model") == expected_groups(
            evs, "provider", "model"
        )
        assert rows(body["by_operation"], "operation") == expected_groups(evs, "operation")
        assert body["by_profile"] == []
        assert [(d["date"], money(d["cost"]), d["requests"]) for d in body["by_day"]] == (
            expected_by_day(evs, org.tz, first, last)
        )
        month_evs = within(org, org.today.replace(day=1), org.today, profile="p-01")
        assert money(body["month"]["spent"]) == sum((e.cost for e in month_evs), Decimal(0))
        assert [b["name"] for b in body["budgets"]] == ["p-01 monthly"]


def test_profile_dashboard_counts_only_that_profiles_unread_alerts(world):
    body = get(world["acme"].tenant, url="/api/v1/profiles/p-01/dashboard")
    assert body["alerts"] == {"unread": 1}


def test_profile_dashboard_range_all_starts_at_that_profiles_first_day(world):
    org = world["acme"]
    body = get(org.tenant, {"range": "all"}, url="/api/v1/profiles/p-06/dashboard")
    # p-06's only usage: 2026-11-01 00:00Z.
    assert body["by_day"][0]["date"] == "2026-11-01"
    assert body["by_day"][-1]["date"] == org.today.isoformat()


def test_unknown_profile_is_404_on_both_endpoints(world):
    client = world["acme"].tenant.client()
    for resp in (
        client.get("/api/v1/profiles/nobody/dashboard"),
        client.get(URL, {"profile": "nobody"}),
    ):
        assert resp.status_code == 404, resp.content
        assert resp.json()["error"] == "not_found"


def test_another_tenants_profile_is_404_as_if_it_did_not_exist(world):
    client = world["acme"].tenant.client()
    for resp in (
        client.get("/api/v1/profiles/globex-only/dashboard"),
        client.get(URL, {"profile": "globex-only"}),
    ):
        assert resp.status_code == 404, resp.content
        assert resp.json()["error"] == "not_found"


def test_key_bound_to_a_profile_cannot_read_another_profiles_dashboard(world):
    org = world["acme"]
    p01 = p01_of(org.tenant.org)
    _, secret = make_key(org.tenant.org, scopes="read", profile=p01)
    client = org.tenant.client(secret)
    for resp in (
        client.get("/api/v1/profiles/p-02/dashboard"),
        client.get(URL, {"profile": "p-02"}),
    ):
        assert resp.status_code == 403, resp.content
        assert resp.json()["error"] == "forbidden"


def test_key_bound_to_a_profile_reads_its_own_dashboard_only(world):
    org = world["acme"]
    p01 = p01_of(org.tenant.org)
    _, secret = make_key(org.tenant.org, scopes="read", profile=p01)
    want = expected_totals(within(org, org.today - timedelta(days=29), org.today, "p-01"))
    for url in (URL, "/api/v1/profiles/p-01/dashboard"):
        body = get(org.tenant, url=url, secret=secret)
        assert api_totals(body) == want
        assert body["by_profile"] == []


# -- bad requests, scopes, tenancy ---------------------------------------------------------


@pytest.mark.parametrize("url", [URL, "/api/v1/profiles/p-01/dashboard"])
def test_unknown_range_is_400_naming_the_range(world, url):
    resp = world["acme"].tenant.client().get(url, {"range": "1y"})
    assert resp.status_code == 400, resp.content
    assert resp.json()["error"] == "invalid"
    assert "range" in resp.json()["details"]


@pytest.mark.parametrize("url", [URL, "/api/v1/profiles/p-01/dashboard"])
def test_since_after_until_is_400(world, url):
    resp = world["acme"].tenant.client().get(url, {"since": "2026-11-10", "until": "2026-11-01"})
    assert resp.status_code == 400, resp.content
    body = resp.json()
    assert body["error"] == "invalid"
    assert set(body["details"]) & {"since", "until"}


def test_malformed_since_is_400_naming_since(world):
    resp = world["acme"].tenant.client().get(URL, {"since": "last tuesday"})
    assert resp.status_code == 400, resp.content
    assert "since" in resp.json()["details"]


@pytest.mark.parametrize("url", [URL, "/api/v1/profiles/p-01/dashboard"])
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "9999-12-30", "until": "9999-12-31"}, "until"),
        ({"until": "9999-12-31T23:00:00-12:00"}, "until"),
        ({"since": "0001-01-01T00:30:00+01:00"}, "since"),
        ({"since": "0001-01-01"}, "since"),
    ],
)
def test_days_at_the_ends_of_the_calendar_are_400_not_500(world, url, query, field):
    resp = world["acme"].tenant.client().get(url, query)
    assert resp.status_code == 400, resp.content
    assert field in resp.json()["details"]


def test_the_calendars_second_and_second_last_days_answer(world):
    client = world["acme"].tenant.client()
    resp = client.get(URL, {"since": "9999-12-29", "until": "9999-12-30"})
    assert resp.status_code == 200, resp.content
    assert resp.json()["totals"]["requests"] == 0


@pytest.mark.parametrize("url", [URL, "/api/v1/profiles/p-01/dashboard"])
def test_the_schema_describes_the_dashboard_as_it_answers(world, url):
    from django.test import Client

    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]

    def shape(ref: str) -> dict:
        return components[ref.rsplit("/", 1)[-1]]

    body = world["acme"].tenant.client().get(url).json()
    dashboard = shape("Dashboard")
    assert set(body) == set(dashboard["properties"])
    for name, value in body.items():
        prop = dashboard["properties"][name]
        if isinstance(value, dict):
            assert set(value) == set(shape(prop["$ref"])["properties"]), name
        elif isinstance(value, list) and value:
            assert set(value[0]) == set(shape(prop["items"]["$ref"])["properties"]), name


@pytest.mark.parametrize("url", [URL, "/api/v1/profiles/p-01/dashboard"])
def test_dashboard_needs_the_read_scope(world, url):
    org = world["acme"]
    _, secret = make_key(org.tenant.org, scopes="ingest,check,manage")
    resp = org.tenant.client(secret).get(url)
    assert resp.status_code == 403, resp.content
    assert resp.json()["error"] == "forbidden"
    _, reader = make_key(org.tenant.org, scopes="read")
    assert org.tenant.client(reader).get(url).status_code == 200


def test_dashboard_without_a_key_is_401(world):
    from rest_framework.test import APIClient

    resp = APIClient().get(URL)
    assert resp.status_code == 401
    assert resp.json()["error"] == "unauthenticated"


@pytest.mark.parametrize("slug", TENANTS)
def test_another_tenants_data_never_appears(world, slug):
    org = world[slug]
    other_only = "globex-only" if slug == "acme" else "acme-only"
    other_model = "gemini-2.5-flash" if slug == "acme" else "gpt-4o-mini"
    body = get(org.tenant, {"range": "all"})
    assert other_only not in {r["profile"] for r in body["by_profile"]}
    assert other_model not in {r["model"] for r in body["by_model"]}
    assert api_totals(body) == expected_totals(within(org, date(2025, 6, 1), org.today))
    assert money(body["month"]["spent"]) == sum(
        (e.cost for e in within(org, org.today.replace(day=1), org.today)), Decimal(0)
    )
    assert all(b["id"] in {str(x.pk) for x in org.budgets.values()} for b in body["budgets"])


# -- no ledger scans -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"range": "today"},
        {"range": "30d"},
        {"range": "mtd"},
        {"range": "all"},
        {"since": "2026-10-31T15:00:00Z", "until": "2026-11-21"},
        {"range": "all", "profile": "p-01"},
    ],
    ids=["today", "30d", "mtd", "all", "since-until", "all-profile"],
)
@pytest.mark.parametrize("url", [URL, "/api/v1/profiles/p-01/dashboard"])
def test_dashboard_reads_rollups_and_counters_never_the_ledger(world, query, url):
    client = world["globex"].tenant.client()
    with CaptureQueriesContext(connection) as ctx:
        resp = client.get(url, query)
    assert resp.status_code == 200, resp.content
    sql = [q["sql"] for q in ctx.captured_queries]
    assert any("costs_dailyusage" in s for s in sql), "the rollups should be read"
    assert not [s for s in sql if "costs_usageevent" in s]


@pytest.mark.parametrize("slug", TENANTS)
def test_first_dashboard_read_of_a_new_local_day_reads_no_ledger(world, slug):
    # The daily budgets' current period was opened at 2026-11-22 10:00Z; a day
    # later nothing has been recorded yet, and the first read of the day must
    # still come from rollups and counters only.
    client = world[slug].tenant.client()
    with (
        time_machine.travel(Z(2026, 11, 23, 16), tick=False),
        CaptureQueriesContext(connection) as ctx,
    ):
        resp = client.get(URL, {"range": "7d"})
    assert resp.status_code == 200, resp.content
    daily = {b["name"]: b for b in resp.json()["budgets"]}["Daily spend"]
    assert datetime.fromisoformat(daily["period_start"]) == local_midnight(
        date(2026, 11, 23) if slug == "acme" else date(2026, 11, 24), world[slug].tz
    )
    assert not [q["sql"] for q in ctx.captured_queries if "costs_usageevent" in q["sql"]]
