"""One hot counter: 32 clients reserving against ONE block budget over HTTP
(POST /api/v1/quota/check with reserve true, a fixed small amount each).

  run "open":    a large limit, so every reservation succeeds -> reservations/s
  run "limit":   a limit worth BENCH_HOT_LIMIT_SLOTS reservations and twice as many
                 requests, so the limit is reached mid-run -> decisions/s, and the
                 overshoot spent + reserved - limit read from BudgetPeriod at the end
                 (must be 0: reservations never push a block budget past its limit)

  baseline:      the bare read of the request benchmark (GET /api/v1/profiles/<id>,
                 same key authentication, one indexed read) from the same clients
                 on the same server, in windows taking turns with the open run's
                 (BENCH_HOT_ROUNDS, default 2): the most any request over this
                 HTTP stack does on this machine, and so the ceiling of the
                 reservations/s figure

  run "limiter": the same reservations without HTTP: threads of this process
                 calling the limiter service (quotas.services.quota_check) on one
                 budget, each on its own database connection -> what the counter
                 itself sustains; the HTTP figure over it is the share the web
                 stack leaves

  BENCH_HOT_RESERVATIONS   requests in the open run (default 4,000)
  BENCH_HOT_LIMIT_SLOTS    reservations the limit run's limit allows (default 500)
  BENCH_HOT_SECONDS        time cap of each run (default 20)
  BENCH_HOT_CLIENTS        concurrent clients (default 32)
  BENCH_HOT_THREADS        limiter-run threads (default 8)
  BENCH_HOT_ROUNDS         windows the open run is split into (default 2)
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal

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
from tests.bench.conftest import make_tenant, pg_connect
from tests.bench.load import LoadResult, run_load

AMOUNT = Decimal("0.01")
BODY = json.dumps(
    {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "operation": "chat",
        "estimate": {"cost": str(AMOUNT)},
        "reserve": True,
    }
).encode()


def _tenant(name: str, limit: Decimal):
    return make_tenant(
        f"hot-{name}",
        profiles=1,
        budgets=[{"name": "The one budget", "metric": "cost", "period": "monthly",
                  "limit": limit}],
        scopes="check,read",
    )  # fmt: skip


def _counters(tenant) -> tuple[Decimal, Decimal]:
    from quotas.models import BudgetPeriod

    (budget,) = tenant.budgets
    periods = list(BudgetPeriod.objects.filter(budget=budget))
    spent = sum((p.spent for p in periods), Decimal(0))
    reserved = sum((p.reserved for p in periods), Decimal(0))
    return spent, reserved


def _load(server, tenant, clients: int, *, requests: int | None, seconds: float,
          read: bool = False) -> LoadResult:  # fmt: skip
    headers = {**tenant.auth, "Content-Type": "application/json"}
    if read:
        spec = ("GET", f"/api/v1/profiles/{tenant.profiles[0]}", None, tenant.auth)
    else:
        spec = ("POST", "/api/v1/quota/check", BODY, headers)
    return run_load(
        server.port,
        lambda c, n: spec,
        clients=clients,
        count=requests,
        duration=seconds,
        warmup_per_client=1 if read else 0,
        timeout=60,
        cpu=CpuMeter(server.pid),
        activity=PgActivity(pg_connect),
    )


def _open_runs(server, clients: int, requests: int, seconds: float, rounds: int):
    """The open run in ``rounds`` windows, each followed by a window of the bare
    read: (reservations, read, spent, reserved)."""
    tenant = _tenant("open", Decimal(10**9))
    reservations = read = None
    for _ in range(rounds):
        window = _load(server, tenant, clients, requests=requests // rounds,
                       seconds=seconds / rounds)  # fmt: skip
        reservations = window if reservations is None else reservations.add(window)
        window = _load(server, tenant, clients, requests=None, seconds=seconds / rounds / 2,
                       read=True)  # fmt: skip
        read = window if read is None else read.add(window)
    return reservations, read, *_counters(tenant)


def _limit_run(server, limit: Decimal, requests: int, clients: int, seconds: float):
    tenant = _tenant("limit", limit)
    result = _load(server, tenant, clients, requests=requests, seconds=seconds)
    return result, *_counters(tenant)


def _limiter_run(threads: int, seconds: float) -> tuple[float, int, Decimal, Decimal]:
    """Reservations/s of the limiter service alone on one hot budget."""
    from django.db import connection

    from quotas.models import BudgetPeriod
    from quotas.services import Dimensions, quota_check

    tenant = make_tenant(
        "hot-limiter",
        budgets=[{"name": "The one budget", "metric": "cost", "period": "monthly",
                  "limit": Decimal(10**9)}],
        scopes="check",
    )  # fmt: skip
    dims = Dimensions(None, None, "openai", "gpt-4o-mini", "chat")
    amounts = {"cost": AMOUNT, "requests": 1}
    quota_check(org=tenant.org, dims=dims, amounts=amounts, reserve=True)  # warm
    stop = threading.Event()
    counts: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        done = 0
        try:
            while not stop.is_set():
                done += quota_check(
                    org=tenant.org, dims=dims, amounts=amounts, reserve=True
                ).allowed
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            counts.append(done)
            connection.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join(timeout=60)
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    (budget,) = tenant.budgets
    (period,) = BudgetPeriod.objects.filter(budget=budget)
    allowed = sum(counts) + 1
    return sum(counts) / wall, allowed, period.reserved, AMOUNT * allowed


def test_hot_budget(server, machine):
    clients = env_int("BENCH_HOT_CLIENTS", 32)
    requests = env_int("BENCH_HOT_RESERVATIONS", 4000)
    slots = env_int("BENCH_HOT_LIMIT_SLOTS", 500)
    seconds = env_float("BENCH_HOT_SECONDS", 20.0)

    rounds = max(1, env_int("BENCH_HOT_ROUNDS", 2))

    open_limit = Decimal(10**9)
    open_res, read_res, open_spent, open_reserved = _open_runs(
        server, clients, requests, seconds, rounds
    )
    tight_limit = AMOUNT * slots
    tight_res, tight_spent, tight_reserved = _limit_run(
        server, tight_limit, 2 * slots, clients, seconds
    )

    threads = env_int("BENCH_HOT_THREADS", 8)
    limiter_rate, limiter_allowed, limiter_reserved, limiter_expected = _limiter_run(
        threads, min(seconds, 5.0)
    )

    allowed = open_res.statuses.get(200, 0)
    tight_allowed = tight_res.statuses.get(200, 0)
    tight_denied = tight_res.statuses.get(402, 0)
    overshoot = tight_spent + tight_reserved - tight_limit
    open_overshoot = open_spent + open_reserved - open_limit

    machine.line("hot_budget", clients=clients, amount=AMOUNT, server=server.describe())
    context("hot_budget_open", http=open_res.summary(), cpu=open_res.cpu, pg=open_res.pg,
            reserved=open_reserved, expected_reserved=AMOUNT * allowed)  # fmt: skip
    context("hot_budget_limit", http=tight_res.summary(), cpu=tight_res.cpu, pg=tight_res.pg, limit=tight_limit,
            spent=tight_spent, reserved=tight_reserved, allowed=tight_allowed,
            denied=tight_denied)  # fmt: skip
    rate = allowed / open_res.wall if open_res.wall else 0.0
    emit("hot_budget_reservations", rate, "reservations/s")
    emit("hot_budget_reserve_p50", open_res.pct_ms(50), "ms")
    emit("hot_budget_reserve_p99", open_res.pct_ms(99), "ms")
    context("hot_budget_read", http=read_res.summary(), cpu=read_res.cpu, pg=read_res.pg)
    read_rate = read_res.ok() / read_res.wall if read_res.wall else 0.0
    emit(f"profile_read_c{clients}_throughput", read_rate, "req/s")
    emit_ratio("hot_budget_reservations", f"profile_read_c{clients}_throughput",
               rate / read_rate if read_rate else 0.0)  # fmt: skip
    context("hot_budget_limiter", threads=threads, allowed=limiter_allowed,
            reserved=limiter_reserved, expected_reserved=limiter_expected)  # fmt: skip
    emit("hot_budget_limiter_reservations", limiter_rate, "reservations/s")
    emit_ratio("hot_budget_reservations", "hot_budget_limiter_reservations",
               rate / limiter_rate if limiter_rate else 0.0)  # fmt: skip
    emit("hot_budget_limit_decisions", tight_res.count / tight_res.wall, "decisions/s")
    emit("hot_budget_limit_allowed", tight_allowed, "reservations")
    emit("hot_budget_overshoot", max(overshoot, Decimal(0)), "USD")
    emit("hot_budget_open_overshoot", max(open_overshoot, Decimal(0)), "USD")
    target("hot_budget", f">= 1000 reservations/s (measured {rate:.0f})", rate >= 1000)
    target("hot_budget_limiter", f">= 1000 reservations/s (measured {limiter_rate:.0f})",
           limiter_rate >= 1000)  # fmt: skip
    target("hot_budget", f"overshoot == 0 (spent+reserved-limit = {overshoot})", overshoot <= 0)
