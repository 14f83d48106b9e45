"""Single-request throughput and latency over HTTP with 8, 16 and 32 concurrent
clients (threads, each on its own keep-alive ``http.client`` connection):

  single_ingest        POST /api/v1/usage, one event (new idempotency key each)
  preflight_check      POST /api/v1/quota/check, reserve false
  preflight_reserve    POST /api/v1/quota/check, reserve true
  profile_read         baseline: GET /api/v1/profiles/<external_id>, a bare DRF
                       endpoint with the same API-key authentication and one
                       indexed read, on the same server in the same run

The organization has three budgets (two block, one warn), so a check matches
all three and a reservation holds two counters. A single client (c1) is run
too: it shows the service time without queueing.

  BENCH_SINGLE_SECONDS       seconds per scenario and concurrency (default 8)
  BENCH_SINGLE_ROUNDS        windows the seconds are split into (default 4)
  BENCH_SINGLE_CONCURRENCY   comma-separated client counts (default 1,8,16,32)

The scenarios of a concurrency take turns, window by window (read, ingest,
check, reserve, read, ...), so that drift in the machine's speed during a run
(another process, PostgreSQL writing out a checkpoint) falls on all of them
alike instead of on whichever ran during it; a CHECKPOINT goes first, so the
dirty pages of earlier work are not written out during the windows.
"""

from __future__ import annotations

import json
import os

import psycopg

from tests.bench.common import (
    CpuMeter,
    PgActivity,
    context,
    emit,
    emit_ratio,
    env_float,
    env_int,
    target,
)
from tests.bench.conftest import TYPICAL_BUDGETS, make_tenant, new_key, pg_connect
from tests.bench.load import LoadResult, run_load

PROFILES = 64


def _query_counts(tenant, run: str) -> dict[str, int]:
    """Queries each scenario makes, measured in this process through the same
    views (Django test client, no HTTP) on the bench database."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    client = APIClient(SERVER_NAME="127.0.0.1")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.secret}")
    calls = {
        "profile_read": lambda i: client.get("/api/v1/profiles/user-1"),
        "single_ingest": lambda i: client.post(
            "/api/v1/usage", _ingest_body(f"{run}-q{i}", 1), content_type="application/json"
        ),
        "preflight_check": lambda i: client.post(
            "/api/v1/quota/check", CHECK, content_type="application/json"
        ),
        "preflight_reserve": lambda i: client.post(
            "/api/v1/quota/check", RESERVE, content_type="application/json"
        ),
    }
    counts = {}
    for name, call in calls.items():
        call(0)  # warm: key last-used stamp, catalog index, periods
        with CaptureQueriesContext(connection) as captured:
            response = call(1)
        assert response.status_code in (200, 201), (name, response.status_code, response.content)
        counts[name] = len(captured.captured_queries)
    return counts


def _ingest_body(key: str, client: int) -> bytes:
    return (
        b'{"idempotency_key":"' + key.encode() + b'","profile":"user-'
        + str(client % PROFILES).encode()
        + b'","provider":"openai","model":"gpt-4o-mini","operation":"chat",'
        b'"usage":{"input_tokens":1200,"output_tokens":350},"tags":{"session_id":"s-1"}}'
    )  # fmt: skip


def _check_body(reserve: bool, profile: str = "user-7") -> bytes:
    return json.dumps(
        {
            "profile": profile,
            "provider": "openai",
            "model": "gpt-4o-mini",
            "operation": "chat",
            "estimate": {"input_tokens": 1200, "output_tokens": 350},
            "reserve": reserve,
        }
    ).encode()


CHECK = _check_body(False)
RESERVE = _check_body(True)


def test_single_requests(server, machine):
    seconds = env_float("BENCH_SINGLE_SECONDS", 8.0)
    levels = [
        int(x) for x in os.environ.get("BENCH_SINGLE_CONCURRENCY", "1,8,16,32").split(",") if x
    ]
    tenant = make_tenant(
        "single",
        profiles=PROFILES,
        budgets=TYPICAL_BUDGETS,
    )  # fmt: skip
    run = new_key("s")
    auth = tenant.auth
    json_headers = {**auth, "Content-Type": "application/json"}
    checks = [_check_body(False, f"user-{c % PROFILES}") for c in range(max(levels))]
    reserves = [_check_body(True, f"user-{c % PROFILES}") for c in range(max(levels))]

    scenarios = {
        "profile_read": lambda c, n: (
            "GET", f"/api/v1/profiles/user-{c % PROFILES}", None, auth),
        "single_ingest": lambda c, n: (
            "POST", "/api/v1/usage", _ingest_body(f"{run}-{c}-{n}", c), json_headers),
        "preflight_check": lambda c, n: (
            "POST", "/api/v1/quota/check", checks[c], json_headers),
        "preflight_reserve": lambda c, n: (
            "POST", "/api/v1/quota/check", reserves[c], json_headers),
    }  # fmt: skip

    queries = _query_counts(tenant, run)
    rounds = max(1, env_int("BENCH_SINGLE_ROUNDS", 4))
    checkpoint = "done"
    try:
        with pg_connect(autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error as exc:  # not a superuser: measured as the machine stands
        checkpoint = f"skipped({type(exc).__name__})"
    results: dict[tuple[str, int], LoadResult] = {}
    for clients in levels:
        for _ in range(rounds):
            for name, make in scenarios.items():
                run = new_key(f"s{clients}")  # idempotency keys never repeat across runs
                window = run_load(
                    server.port,
                    make,
                    clients=clients,
                    duration=seconds / rounds,
                    warmup_per_client=2,
                    timeout=60,
                    cpu=CpuMeter(server.pid),
                    activity=PgActivity(pg_connect),
                )
                previous = results.get((name, clients))
                results[(name, clients)] = window if previous is None else previous.add(window)

    machine.line(
        "single_requests",
        seconds_per_run=seconds,
        windows_per_run=rounds,
        checkpoint_first=checkpoint,
        concurrency="/".join(map(str, levels)),
        budgets=len(tenant.budgets),
        server=server.describe(),
    )
    for name in scenarios:
        emit(f"{name}_queries", queries[name], "queries/request")
    for clients in levels:
        base = results[("profile_read", clients)]
        for name in scenarios:
            res = results[(name, clients)]
            label = f"{name}_c{clients}"
            context(label, http=res.summary(), cpu=res.cpu, pg=res.pg)
            ok = res.ok()
            emit(f"{label}_throughput", ok / res.wall, "req/s")
            emit(f"{label}_p50", res.pct_ms(50), "ms")
            emit(f"{label}_p99", res.pct_ms(99), "ms")
            if name != "profile_read":
                ratio = (ok / res.wall) / (base.ok() / base.wall) if base.ok() else 0.0
                emit_ratio(f"{label}_throughput", f"profile_read_c{clients}_throughput", ratio)
                if clients > 1:
                    target(label, f"throughput >= 70% of profile_read (measured {ratio:.0%})",
                           ratio >= 0.7)  # fmt: skip
            if name.startswith("preflight"):
                p50 = res.pct_ms(50)
                target(label, f"p50 < 5 ms (measured {p50:.1f})", p50 < 5)
