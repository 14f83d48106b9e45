"""The admin index as a tenant's owner sees it in a real browser: cards, budget
bars, the three Chart.js charts, top profiles, alerts and totals, all equal to
what the dashboard API says for the same data; the range selector refetching;
another tenant's owner seeing none of it; the profile page's month and chart.

The live server runs in a thread of this process against committed data
(``transaction=True``); the clock is the real one, so every event is placed
relative to now: at noon on each of the last 29 days and, today, halfway
between midnight and now.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal
from typing import Any

import pytest
from django.utils import timezone

from costs.services import EventInput, usage_record
from profiles.models import Profile
from quotas.models import Alert
from quotas.services import budget_create
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"
CENTS = Decimal("0.01")
MILLION = Decimal(1_000_000)
# Published prices, $ per million tokens: (input, output).
PRICES = {
    ("openai", "gpt-4o"): (Decimal("2.50"), Decimal("10")),
    ("anthropic", "claude-sonnet-4-5"): (Decimal("3"), Decimal("15")),
    ("google", "gemini-2.5-flash"): (Decimal("0.30"), Decimal("2.50")),
}
ACME_ONLY_MODELS = ("claude-sonnet-4-5", "gemini-2.5-flash", "m1")
ACME_PROFILES = ("studio-alice", "Alice Studio", "bulk-bob", "Bob Bulk")


@dataclass
class Seeded:
    tenant: Any
    today: date
    month_cost: Decimal  # hand sum of this month's events
    profile: Profile


def _event(key: str, at: datetime, provider: str, model: str, **kw: Any) -> EventInput:
    usage = kw.pop("usage", {})
    return EventInput(
        idempotency_key=key,
        request_hash=key,
        provider=provider,
        model=model,
        operation=kw.pop("operation", "chat"),
        usage=usage,
        occurred_at=at,
        **kw,
    )


def _hand_cost(provider: str, model: str, usage: dict[str, int]) -> Decimal:
    per_in, per_out = PRICES[(provider, model)]
    return (usage["input_tokens"] * per_in + usage["output_tokens"] * per_out) / MILLION


def _when(now: datetime, offset: int) -> datetime:
    """Noon ``offset`` UTC days ago; today, halfway between midnight and now."""
    day = now.date() - timedelta(days=offset)
    if offset == 0:
        midnight = datetime.combine(day, time(0), tzinfo=UTC)
        return midnight + (now - midnight) / 2
    return datetime.combine(day, time(12), tzinfo=UTC)


@pytest.fixture
def acme(catalog, tenant_a, alice) -> Seeded:
    """Acme (UTC): 30 days of usage across four providers and two profiles, a
    monthly and a daily cost budget (about 40 % and 25 % used) and an alert."""
    alice.set_password(PASSWORD)
    alice.save()
    org = tenant_a.org
    studio = ProfileFactory(
        organization=org, external_id="studio-alice", display_name="Alice Studio"
    )
    ProfileFactory(organization=org, external_id="bulk-bob", display_name="Bob Bulk")
    now = timezone.now()
    today = now.date()
    events, month_cost, today_cost = [], Decimal(0), Decimal(0)
    for offset in range(30):
        at = _when(now, offset)
        calls = [
            (
                "openai",
                "gpt-4o",
                {"input_tokens": 1000 * (offset + 1), "output_tokens": 517},
                "studio-alice",
            ),
        ]
        if offset % 2 == 0:
            calls.append(
                (
                    "anthropic",
                    "claude-sonnet-4-5",
                    {"input_tokens": 2113, "output_tokens": 301},
                    "bulk-bob",
                )
            )
        if offset % 3 == 0:
            calls.append(
                (
                    "google",
                    "gemini-2.5-flash",
                    {"input_tokens": 50_000, "output_tokens": 2_000},
                    None,
                )
            )
        for n, (provider, model, usage, profile) in enumerate(calls):
            events.append(
                _event(
                    f"a-{offset}-{n}",
                    at,
                    provider,
                    model,
                    usage=usage,
                    profile=profile,
                    revenue=Decimal("0.013"),
                )
            )
            cost = _hand_cost(provider, model, usage)
            month_cost += cost if at.date().replace(day=1) == today.replace(day=1) else Decimal(0)
            today_cost += cost if offset == 0 else Decimal(0)
        if offset % 5 == 0:  # a client-priced image service the catalog does not know
            events.append(
                _event(
                    f"a-{offset}-img",
                    at,
                    "acme-ai",
                    "m1",
                    operation="image",
                    usage={"images": 1},
                    cost=Decimal("0.35"),
                    profile="studio-alice",
                )
            )
            month_cost += (
                Decimal("0.35") if at.date().replace(day=1) == today.replace(day=1) else Decimal(0)
            )
            today_cost += Decimal("0.35") if offset == 0 else Decimal(0)
    results = usage_record(org=org, events=events)
    assert {r.status for r in results} == {201}
    # Created after the usage: each opens its period from the ledger, and no
    # threshold check gets queued for a worker.
    budget_create(
        org=org,
        name="Monthly AI spend",
        metric="cost",
        period="monthly",
        limit=(month_cost * 5 / 2).quantize(CENTS, rounding=ROUND_UP),
    )
    budget_create(
        org=org,
        name="Daily spend",
        metric="cost",
        period="daily",
        limit=(today_cost * 4).quantize(CENTS, rounding=ROUND_UP),
    )
    Alert.objects.create(
        organization=org,
        kind=Alert.Kind.SPEND_SPIKE,
        severity=Alert.Severity.WARNING,
        title="Spend spike: 3x the 7-day average",
        message="m",
        dedup_key="e2e-spike",
    )
    return Seeded(tenant_a, today, month_cost, studio)


@pytest.fixture
def globex(catalog, tenant_b, charlie) -> Seeded:
    """Globex (Asia/Tokyo): a little gpt-4o usage of its own."""
    charlie.set_password(PASSWORD)
    charlie.save()
    org = tenant_b.org
    now = timezone.now()
    tokyo = ProfileFactory(organization=org, external_id="tokyo-user", display_name="Tokyo User")
    usage = {"input_tokens": 777, "output_tokens": 333}
    usage_record(
        org=org,
        events=[
            _event(
                f"g-{i}",
                now - timedelta(minutes=i),
                "openai",
                "gpt-4o",
                usage=usage,
                profile="tokyo-user",
            )
            for i in range(3)
        ],
    )
    return Seeded(
        tenant_b, now.astimezone(org.tz).date(), 3 * _hand_cost("openai", "gpt-4o", usage), tokyo
    )


# -- helpers ----------------------------------------------------------------------------


def api(live_server, secret: str, query: str = "", path: str = "/api/v1/dashboard") -> dict:
    request = urllib.request.Request(
        f"{live_server.url}{path}?{query}", headers={"Authorization": f"Bearer {secret}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def dollars(amount: str | Decimal) -> str:
    """$1,234.57, as people read money."""
    value = Decimal(amount).quantize(CENTS, rounding=ROUND_HALF_UP)
    return f"{'-' if value < 0 else ''}${abs(value):,}"


def login(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    page.wait_for_selector("#spend-dashboard[data-rendered-at]", state="attached")


def field(page, name: str) -> str:
    return page.inner_text(f'#spend-dashboard [data-field="{name}"]').strip()


DRAWN = """(selector) => {
  const c = document.querySelector(selector);
  if (!c) { return null; }
  const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { painted++; } }
  const chart = Chart.getChart(c);
  return {
    width: c.width, height: c.height, painted: painted,
    labels: chart ? chart.data.labels.map(String) : null,
    datasets: chart ? chart.data.datasets.map((d) => ({label: d.label, data: d.data.map(String)})) : null,
  };
}"""


def drawn(page, selector: str) -> dict:
    info = page.evaluate(DRAWN, selector)
    assert info is not None, f"{selector} is missing"
    assert info["width"] > 0 and info["height"] > 0, (selector, info)
    assert info["painted"] > 0, f"{selector} has no painted pixel"
    assert info["datasets"], f"{selector} has no Chart.js datasets"
    assert any(Decimal(v) > 0 for ds in info["datasets"] for v in ds["data"]), selector
    return info


# -- the owner's dashboard -------------------------------------------------------------------


def test_admin_index_shows_dashboard_figures_equal_to_the_api(page, live_server, acme, artifacts):
    secret = acme.tenant.secret
    body = api(live_server, secret, "range=30d")
    today = api(live_server, secret, "range=today")
    monday = acme.today - timedelta(days=acme.today.weekday())
    week = api(live_server, secret, f"since={monday}&until={acme.today}")
    assert Decimal(body["month"]["spent"]) == acme.month_cost

    login(page, live_server, "alice@example.com")
    page.screenshot(path=str(artifacts / "admin-dashboard.png"), full_page=True)

    # Cards and totals read as money, equal to the API's figures.
    assert field(page, "cards.today.display") == dollars(today["totals"]["cost"])
    assert field(page, "cards.week.display") == dollars(week["totals"]["cost"])
    assert field(page, "cards.month.display") == dollars(body["month"]["spent"])
    assert field(page, "projection.display") == dollars(body["month"]["projected"])
    assert field(page, "totals.cost") == dollars(body["totals"]["cost"])
    assert field(page, "totals.revenue") == dollars(body["totals"]["revenue"])
    assert field(page, "totals.margin") == dollars(body["totals"]["margin"])
    assert field(page, "totals.requests") == str(body["totals"]["requests"])
    assert field(page, "totals.input_tokens") == str(body["totals"]["input_tokens"])
    assert field(page, "totals.output_tokens") == str(body["totals"]["output_tokens"])

    # The three charts are drawn, with the API's series.
    daily = drawn(page, "#sd-daily")
    assert daily["labels"] == [d["date"] for d in body["by_day"]]
    assert {ds["label"] for ds in daily["datasets"]} == {r["provider"] for r in body["by_provider"]}
    for i, day in enumerate(body["by_day"]):
        plotted = sum((Decimal(ds["data"][i]) for ds in daily["datasets"]), Decimal(0))
        assert abs(plotted - Decimal(day["cost"])) < Decimal("1e-9"), day
    providers = drawn(page, "#sd-providers")
    assert providers["labels"] == [r["provider"] for r in body["by_provider"]]
    assert len(providers["labels"]) == 4
    models = drawn(page, "#sd-models")
    assert models["labels"] == [r["model"] for r in body["by_model"][:8]]

    # Budget bars: name, and a fill as wide as the percentage used.
    bars = page.evaluate(
        """() => [...document.querySelectorAll('[data-bars] .budget-progress')].map((row) => {
             const fill = row.querySelector('.sd-bar-fill');
             const track = row.querySelector('.sd-bar-track');
             return {container: row.parentElement.dataset.bars, text: row.textContent,
                     style: fill.style.width,
                     ratio: String(fill.getBoundingClientRect().width / track.getBoundingClientRect().width)};
           })"""
    )
    statuses = {b["name"]: b for b in body["budgets"]}
    assert set(statuses) == {"Monthly AI spend", "Daily spend"}
    assert len(bars) == 2
    for bar in bars:
        name = next(n for n in statuses if bar["text"].startswith(n))
        status = statuses[name]
        assert bar["container"] == status["period"]
        percent = Decimal(status["percent_used"])
        assert Decimal("10") < percent < Decimal("60"), status
        assert Decimal(bar["style"].removesuffix("%")) == percent
        assert abs(Decimal(bar["ratio"]) * 100 - percent) <= 1, bar
        assert f"({status['percent_used']}%)" in bar["text"]

    # Top profiles and recent alerts.
    profile_rows = page.eval_on_selector_all(
        "#sd-profiles tbody tr", "(rows) => rows.map((r) => [...r.cells].map((c) => c.textContent))"
    )
    assert profile_rows == [
        [r["display_name"] or r["profile"], dollars(r["cost"]), str(r["requests"])]
        for r in body["by_profile"]
    ]
    assert {r[0] for r in profile_rows} == {"Alice Studio", "Bob Bulk"}
    assert "Spend spike: 3x the 7-day average" in page.inner_text("#sd-alerts")
    assert page.js_errors == []


def test_changing_the_range_refetches_and_updates_the_figures(page, live_server, acme):
    week = api(live_server, acme.tenant.secret, "range=7d")
    login(page, live_server, "alice@example.com")
    assert len(drawn(page, "#sd-daily")["labels"]) == 30
    assert page.get_attribute("#spend-dashboard", "data-refreshes") is None

    page.select_option("#sd-range", "7d")
    page.wait_for_function("document.getElementById('spend-dashboard').dataset.refreshes === '1'")
    assert field(page, "totals.cost") == dollars(week["totals"]["cost"])
    assert field(page, "totals.requests") == str(week["totals"]["requests"])
    assert page.eval_on_selector_all(
        '#spend-dashboard [data-field="range"]', "(els) => els.map((e) => e.textContent)"
    ) == ["7d", "7d"]
    daily = drawn(page, "#sd-daily")
    assert daily["labels"] == [d["date"] for d in week["by_day"]]
    assert len(daily["labels"]) == 7
    assert page.js_errors == []


# -- tenancy ---------------------------------------------------------------------------------


def test_another_tenants_owner_sees_none_of_the_first_tenants_figures(
    page, live_server, acme, globex
):
    acme_body = api(live_server, acme.tenant.secret, "range=30d")
    globex_body = api(live_server, globex.tenant.secret, "range=30d")
    login(page, live_server, "charlie@example.com")

    html = page.content()
    for name in ACME_PROFILES:
        assert name not in html
    assert "Tokyo User" in page.inner_text("#sd-profiles")
    charts = [drawn(page, s) for s in ("#sd-daily", "#sd-providers", "#sd-models")]
    labels = {str(label) for c in charts for label in c["labels"]} | {
        ds["label"] for c in charts for ds in c["datasets"] if ds["label"]
    }
    for model in ACME_ONLY_MODELS:
        assert model not in labels
        # As a name, not inside the page's random tokens (a CSRF token held "m1" once).
        assert re.search(rf"(?<![\w.-]){re.escape(model)}(?![\w.-])", html) is None, model
    assert {"anthropic", "google", "acme-ai"}.isdisjoint(labels)
    assert Decimal(globex_body["totals"]["cost"]) == globex.month_cost
    assert field(page, "totals.cost") == dollars(globex_body["totals"]["cost"])
    assert field(page, "totals.cost") != dollars(acme_body["totals"]["cost"])
    assert "Spend spike" not in page.inner_text("#sd-alerts")

    status = page.evaluate(
        """async (base) => {
             const other = await fetch(base + '/admin/dashboard/data?org=acme', {credentials: 'same-origin'});
             const own = await fetch(base + '/admin/dashboard/data?org=globex', {credentials: 'same-origin'});
             return [other.status, own.status, await other.text()];
           }""",
        live_server.url,
    )
    assert status[:2] == [404, 200]
    assert "Alice Studio" not in status[2]


# -- the profile page ------------------------------------------------------------------------


def test_profile_page_shows_month_spend_and_a_drawn_daily_chart(page, live_server, acme, artifacts):
    profile_body = api(
        live_server, acme.tenant.secret, "range=30d", path="/api/v1/profiles/studio-alice/dashboard"
    )
    login(page, live_server, "alice@example.com")
    page.goto(f"{live_server.url}/admin/profiles/profile/{acme.profile.pk}/change/")
    page.wait_for_selector("canvas.profile-daily-chart")
    page.wait_for_function(
        "Chart.getChart(document.querySelector('canvas.profile-daily-chart')) !== undefined"
    )
    page.screenshot(path=str(artifacts / "admin-profile.png"), full_page=True)

    text = page.inner_text("body")
    assert f"Spent this month: {dollars(profile_body['month']['spent'])}" in text
    chart = drawn(page, "canvas.profile-daily-chart")
    assert len(chart["labels"]) == 30
    plotted = [Decimal(v) for v in chart["datasets"][0]["data"]]
    expected = [Decimal(d["cost"]) for d in profile_body["by_day"]]
    assert [abs(p - e) < Decimal("0.000001") for p, e in zip(plotted, expected, strict=True)] == [
        True
    ] * 30
    assert page.js_errors == []


def test_another_tenants_owner_cannot_open_the_profile_page(page, live_server, acme, globex):
    login(page, live_server, "charlie@example.com")
    resp = page.goto(f"{live_server.url}/admin/profiles/profile/{acme.profile.pk}/change/")
    # Another tenant's object: 404, exactly as if it did not exist.
    assert resp.status == 404
    assert "Spent this month" not in page.inner_text("body")
    assert "Alice Studio" not in page.content()


# -- the ledger's filters ----------------------------------------------------------------------


def test_ledger_filters_by_a_searched_profile_and_a_provider_in_the_browser(
    page, live_server, acme, artifacts
):
    """The profile is found by typing into the filter's search box (select2,
    served by the admin's autocomplete), the provider chosen from the
    dropdown the rollups fill; the filter form's submit narrows the list."""
    login(page, live_server, "alice@example.com")
    page.goto(f"{live_server.url}/admin/costs/usageevent/")
    # The filter panel opens from the toolbar; its form holds both filters.
    page.click("text=Filters")
    page.click('select[name="profile__id__exact"] + .select2 .select2-selection')
    page.keyboard.type("studio")  # its external id; the option shows its name
    page.click(".select2-results__option:has-text('Alice Studio')")
    page.select_option('#filter-form select[name="provider"]', "openai")
    page.click("#filter-form button[type=submit]")
    page.wait_for_url("**/admin/costs/usageevent/?*")
    url = page.url
    assert "provider=openai" in url and "profile__id__exact=" in url, url
    rows = page.eval_on_selector_all(
        "#result_list tbody tr", "(trs) => trs.map((tr) => tr.innerText)"
    )
    page.screenshot(path=str(artifacts / "ledger-filtered.png"), full_page=True)
    assert len(rows) == 30, rows  # one gpt-4o call for studio-alice a day
    assert all("openai" in r and "Alice Studio" in r for r in rows), rows
    assert page.js_errors == []
