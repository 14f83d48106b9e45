"""How a pre-flight check and a single-event ingestion grow with the budgets an
organization holds: the same calls in an organization with one budget per
profile (BENCH_SCALE_BUDGETS of them, plus one for the whole organization) and
in one with the organization's budget alone. In-process, through the services
and views (Django test client, no HTTP), median of BENCH_SCALE_CALLS calls.

  BENCH_SCALE_BUDGETS   per-profile budgets of the large organization (default 5,000)
  BENCH_SCALE_CALLS     timed calls per figure (default 200)
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from decimal import Decimal

from tests.bench.common import context, emit, emit_ratio, env_int
from tests.bench.conftest import TYPICAL_BUDGETS, make_tenant, new_key, pg_connect

ORG_BUDGET = TYPICAL_BUDGETS[0]


def _tenant(name: str, per_profile: int):
    from django.utils import timezone

    from profiles.models import Profile
    from quotas.models import Budget
    from quotas.services import active_budgets, current_states

    tenant = make_tenant(name, profiles=max(per_profile, 1), budgets=[ORG_BUDGET])
    profiles = list(Profile.objects.filter(organization=tenant.org).order_by("external_id"))
    Budget.objects.bulk_create(
        [
            Budget(
                id=uuid.uuid4(),
                organization=tenant.org,
                name=f"Profile {p.external_id}",
                profile=p,
                metric="cost",
                period="monthly",
                limit=Decimal(100),
                thresholds=[80, 100],
            )  # fmt: skip
            for p in profiles[:per_profile]
        ]
    )
    current_states(tenant.org, active_budgets(tenant.org), timezone.now())  # periods open
    return tenant


def _median_ms(call, calls: int) -> float:
    for i in range(10):
        call(-1 - i)
    times = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _figures(tenant, calls: int, run: str) -> tuple[float, float]:
    from rest_framework.test import APIClient

    client = APIClient(SERVER_NAME="127.0.0.1")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.secret}")
    check = json.dumps({"profile": "user-0", "provider": "openai", "model": "gpt-4o-mini",
                        "estimate": {"input_tokens": 1200, "output_tokens": 350}})  # fmt: skip

    def one_check(i: int) -> None:
        response = client.post("/api/v1/quota/check", check, content_type="application/json")
        assert response.status_code == 200, response.content

    def one_event(i: int) -> None:
        body = json.dumps({"idempotency_key": f"{run}-{i}", "profile": "user-0",
                           "provider": "openai", "model": "gpt-4o-mini",
                           "usage": {"input_tokens": 1200, "output_tokens": 350}})  # fmt: skip
        response = client.post("/api/v1/usage", body, content_type="application/json")
        assert response.status_code == 201, response.content

    return _median_ms(one_check, calls), _median_ms(one_event, calls)


def test_budget_scale(bench_db, machine):
    budgets = env_int("BENCH_SCALE_BUDGETS", 5000)
    calls = env_int("BENCH_SCALE_CALLS", 200)
    small = _tenant("scale-small", 0)
    large = _tenant("scale-large", budgets)
    # What autovacuum's analyze does after a bulk change (it is off on the
    # development machine): planned on the stats of a near-empty budget table,
    # every later benchmark's reads scanned these 5,000 rows, and single-event
    # ingest ran at half speed.
    with pg_connect(autocommit=True) as conn:
        conn.execute("ANALYZE quotas_budget, quotas_budgetperiod, profiles_profile")
    small_check, small_ingest = _figures(small, calls, new_key("scale-s"))
    large_check, large_ingest = _figures(large, calls, new_key("scale-l"))
    machine.line("budget_scale", budgets_small=1, budgets_large=budgets + 1, calls=calls,
                 path="in-process (Django test client)")  # fmt: skip
    context("budget_scale", note="the profile checked has its own budget in the large organization")
    emit("check_1_budget_p50", small_check, "ms")
    emit(f"check_{budgets + 1}_budgets_p50", large_check, "ms")
    emit_ratio(f"check_{budgets + 1}_budgets_p50", "check_1_budget_p50", large_check / small_check)
    emit("ingest_1_budget_p50", small_ingest, "ms")
    emit(f"ingest_{budgets + 1}_budgets_p50", large_ingest, "ms")
    emit_ratio(
        f"ingest_{budgets + 1}_budgets_p50", "ingest_1_budget_p50", large_ingest / small_ingest
    )
