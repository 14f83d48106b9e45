"""Dashboard latency: GET /api/v1/dashboard?range=30d over HTTP against an
organization with a large ledger (read from the daily rollups) -> ms, warm,
median of sequential calls.

Baseline in the same run: the same figures (totals; by provider, model,
operation, top-10 profile, day, day x provider; month to date) computed with
GROUP BY over the ledger (``costs_usageevent``) for the same 30 days in SQL,
query after query on one connection -> ms, median of repetitions.

Then GET /api/v1/usage/summary over all time (from the rollups) the same way,
against its sums by GROUP BY over the organization's whole ledger in SQL.

  BENCH_DASHBOARD_EVENTS  ledger events of the organization (default 500,000 so a
                          default run stays quick; the full figure is
                          BENCH_DASHBOARD_EVENTS=5000000, loaded once in minutes
                          and kept in the bench database for later runs)
  BENCH_DASHBOARD_CALLS   timed dashboard calls (default 20)
  BENCH_DASHBOARD_REPS    baseline repetitions (default 5)
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from tests.bench import dashboard_data
from tests.bench.common import HOST, context, emit, emit_ratio, env_int, target
from tests.bench.conftest import RUN_ID, conninfo, pg_connect


def _dataset(events: int) -> tuple[object, dashboard_data.LoadInfo]:
    from profiles.models import Organization, Profile
    from profiles.services import organization_create

    with pg_connect(autocommit=True) as conn:
        info = dashboard_data.find(conn, events)
    if info is not None:
        return Organization.objects.get(pk=info.org_id), info
    # A load of this size that died half-way (no marker) goes first.
    slug = dashboard_data.dataset_name(events)
    for old in Organization.objects.filter(slug=slug):
        with pg_connect(autocommit=True) as conn:  # the ledger rows in one statement
            conn.execute("DELETE FROM costs_usageevent WHERE organization_id = %s", [old.pk])
            conn.execute("DELETE FROM costs_dailyusage WHERE organization_id = %s", [old.pk])
        old.delete()
    org = organization_create(slug=slug, name=f"Bench dashboard {events}")
    profiles = Profile.objects.bulk_create(
        [
            Profile(organization=org, external_id=f"dash-user-{i}", display_name=f"Dash user {i}")
            for i in range(dashboard_data.PROFILES)
        ]
    )
    info = dashboard_data.load(
        conninfo=conninfo(),
        org=org,
        profile_ids=[p.pk for p in profiles],
        events=events,
        progress=lambda msg: print(f"bench-progress: {msg}", flush=True),
    )
    return org, info


def _ensure_budgets(org) -> int:
    """Two budgets, created after the load so their periods open from the ledger."""
    from quotas.models import Budget
    from quotas.services import budget_create

    if not Budget.objects.filter(organization=org).exists():
        budget_create(org=org, name="Org monthly", metric="cost", period="monthly",
                      limit=Decimal(10**7))  # fmt: skip
        budget_create(org=org, name="Anthropic monthly", metric="cost", period="monthly",
                      provider="anthropic", action="warn", limit=Decimal(10**6))  # fmt: skip
    return Budget.objects.filter(organization=org).count()


def _query_count(secret: str) -> int:
    """Queries one dashboard request makes (in this process, same view, no HTTP)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    client = APIClient(SERVER_NAME="127.0.0.1")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    client.get("/api/v1/dashboard?range=30d")
    with CaptureQueriesContext(connection) as captured:
        client.get("/api/v1/dashboard?range=30d")
    return len(captured.captured_queries)


def _baseline_queries(org_id, first: date, until: date, month_first: date, today: date):
    since = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(until, datetime.min.time(), tzinfo=UTC)
    month_since = datetime.combine(month_first, datetime.min.time(), tzinfo=UTC)
    month_end = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    sums = (
        "sum(e.cost) AS cost, count(*) AS requests, sum(e.input_tokens) AS input_tokens,"
        " sum(e.output_tokens) AS output_tokens, sum(e.revenue) AS revenue"
    )
    where = "e.organization_id = %(org)s AND e.occurred_at >= %(since)s AND e.occurred_at < %(end)s"
    params = {"org": org_id, "since": since, "end": end}
    queries = [
        f"SELECT {sums} FROM costs_usageevent e WHERE {where}",
        f"SELECT e.provider, {sums} FROM costs_usageevent e WHERE {where}"
        " GROUP BY 1 ORDER BY cost DESC, 1",
        f"SELECT e.provider, e.model, {sums} FROM costs_usageevent e WHERE {where}"
        " GROUP BY 1, 2 ORDER BY cost DESC, 1, 2 LIMIT 50",
        f"SELECT e.operation, {sums} FROM costs_usageevent e WHERE {where}"
        " GROUP BY 1 ORDER BY cost DESC, 1",
        f"SELECT p.external_id, p.display_name, {sums} FROM costs_usageevent e"
        f" JOIN profiles_profile p ON p.id = e.profile_id WHERE {where}"
        " GROUP BY 1, 2 ORDER BY cost DESC, 1, 2 LIMIT 10",
        f"SELECT e.day, {sums} FROM costs_usageevent e WHERE {where} GROUP BY 1 ORDER BY 1",
        f"SELECT e.day, e.provider, {sums} FROM costs_usageevent e WHERE {where}"
        " GROUP BY 1, 2 ORDER BY cost DESC, 1, 2",
        f"SELECT {sums} FROM costs_usageevent e WHERE e.organization_id = %(org)s"
        " AND e.occurred_at >= %(msince)s AND e.occurred_at < %(mend)s",
    ]
    return queries, {**params, "msince": month_since, "mend": month_end}


def test_dashboard(server, machine):
    from profiles.services import api_key_create

    events = env_int("BENCH_DASHBOARD_EVENTS", 500_000)
    calls = env_int("BENCH_DASHBOARD_CALLS", 20)
    reps = env_int("BENCH_DASHBOARD_REPS", 5)

    org, info = _dataset(events)
    budgets = _ensure_budgets(org)
    issued = api_key_create(org=org, name=f"bench {RUN_ID}", scopes="read")
    try:
        _measure(server, machine, org, info, budgets, issued.secret, calls, reps)
    finally:
        issued.api_key.delete()


def _timed_get(server, path: str, headers: dict, calls: int) -> tuple[list[float], dict]:
    """``calls`` sequential GETs of ``path`` after 3 unmeasured ones, on one
    keep-alive connection -> the seconds of each, the last answer's body."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    timings = []
    body = {}
    try:
        for i in range(3 + calls):
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            elapsed = time.perf_counter() - t0
            if resp.status != 200:
                raise AssertionError(f"{path} answered {resp.status}: {data[:300]!r}")
            if i >= 3:
                timings.append(elapsed)
            body = json.loads(data)
    finally:
        conn.close()
    return timings, body


def _measure(server, machine, org, info, budgets, secret, calls, reps) -> None:
    headers = {"Authorization": f"Bearer {secret}"}

    # -- the endpoint, warm -------------------------------------------------------------
    timings, body = _timed_get(server, "/api/v1/dashboard?range=30d", headers, calls)
    dashboard_ms = statistics.median(timings) * 1000
    n_queries = _query_count(secret)

    # -- the baseline: the same figures by GROUP BY over the ledger ----------------------
    first = date.fromisoformat(body["since"][:10])
    until = date.fromisoformat(body["until"][:10])
    today = until - timedelta(days=1)
    queries, params = _baseline_queries(org.pk, first, until, today.replace(day=1), today)
    with pg_connect() as pg:
        ledger_30d = pg.execute(queries[0], params).fetchone()
        rollup_rows = pg.execute(
            "SELECT count(*) FROM costs_dailyusage WHERE organization_id = %s"
            " AND day >= %s AND day < %s",
            [org.pk, first, until],
        ).fetchone()[0]
        base = []
        for rep in range(reps + 1):
            t0 = time.perf_counter()
            for q in queries:
                pg.execute(q, params).fetchall()
            if rep:  # the first pass warms the cache
                base.append(time.perf_counter() - t0)
    baseline_ms = statistics.median(base) * 1000

    consistent = Decimal(body["totals"]["cost"]) == (ledger_30d[0] or Decimal(0)) and int(
        body["totals"]["requests"]
    ) == int(ledger_30d[1])
    machine.line(
        "dashboard",
        ledger_events=info.events,
        events_in_30d=ledger_30d[1],
        rollup_rows_in_30d=rollup_rows,
        profiles=dashboard_data.PROFILES,
        budgets=budgets,
        loaded=f"{info.loaded_at:%Y-%m-%d}",
        load_seconds=f"{info.seconds:.0f}",
        reused=info.reused,
        calls=calls,
        server=server.describe(),
    )
    context("dashboard", rollups_equal_ledger_30d=consistent,
            dashboard_p90_ms=f"{sorted(timings)[int(0.9 * (len(timings) - 1))] * 1000:.1f}",
            dashboard_max_ms=f"{max(timings) * 1000:.1f}", baseline_reps=reps)  # fmt: skip
    if not info.reused:
        emit("dashboard_data_load", info.seconds, "s")
    emit("dashboard_queries", n_queries, "queries/request")
    emit("dashboard_30d_latency", dashboard_ms, "ms")
    emit("ledger_groupby_30d_latency", baseline_ms, "ms")
    speedup = baseline_ms / dashboard_ms if dashboard_ms else 0.0
    emit_ratio("dashboard_30d_latency", "ledger_groupby_30d_latency",
               dashboard_ms / baseline_ms if baseline_ms else 0.0)  # fmt: skip
    emit("dashboard_30d_speedup", speedup, "x")
    target("dashboard", f"latency < 150 ms (measured {dashboard_ms:.1f})", dashboard_ms < 150)
    target("dashboard", f">= 50x faster than the ledger GROUP BY (measured {speedup:.1f}x)",
           speedup >= 50)  # fmt: skip
    _measure_summary(server, org, headers, calls, reps)


def _measure_summary(server, org, headers, calls, reps) -> None:
    """GET /api/v1/usage/summary over all time (read from the rollups), against
    the same sums by GROUP BY over the ledger (how a summary with a tag or a
    time range is computed)."""
    timings, body = _timed_get(server, "/api/v1/usage/summary", headers, calls)
    summary_ms = statistics.median(timings) * 1000
    query = (
        "SELECT provider, count(*), sum(input_tokens), sum(output_tokens), sum(cost)"
        " FROM costs_usageevent WHERE organization_id = %s GROUP BY 1 ORDER BY 1"
    )
    base = []
    with pg_connect() as pg:
        for rep in range(reps + 1):
            t0 = time.perf_counter()
            ledger = pg.execute(query, [org.pk]).fetchall()
            if rep:
                base.append(time.perf_counter() - t0)
    baseline_ms = statistics.median(base) * 1000
    consistent = [
        (r["provider"], r["events"], Decimal(r["cost"])) for r in body["by_provider"]
    ] == [(provider, events, cost) for provider, events, _, _, cost in ledger]
    context("usage_summary", rollups_equal_ledger=consistent, events=body["totals"]["events"])
    emit("usage_summary_latency", summary_ms, "ms")
    emit("ledger_groupby_summary_latency", baseline_ms, "ms")
    emit_ratio("usage_summary_latency", "ledger_groupby_summary_latency",
               summary_ms / baseline_ms if baseline_ms else 0.0)  # fmt: skip
