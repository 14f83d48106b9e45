"""The admin's ledger page for a tenant's owner: the changelist of an
organization with a large ledger (the dashboard benchmark's data set) ->
ms, in-process (Django test client, a logged-in owner), warm median.

Baseline in the same run: the same page for an organization with 200 events
(a full page of 100 rows too).
The ratio says how the page grows with the ledger: the listing walks the
(organization, time) index to its first page and the filters read the
rollups, so it should stay near 1 whatever the number of events.

Then an operator's page (a superuser, every organization's events in time
order, the whole bench database's ledger) against the same baseline: each
organization's index gives a window of time that holds the page, so it
should stay near 1 too.

  BENCH_DASHBOARD_EVENTS  events of the large organization (default 500,000;
                          shared with test_dashboard.py, loaded once)
  BENCH_ADMIN_CALLS       timed page loads per figure (default 15)
"""

from __future__ import annotations

import statistics
import time

from tests.bench.common import context, emit, emit_ratio, env_int, target
from tests.bench.conftest import make_tenant, new_key
from tests.bench.test_dashboard import _dataset

PAGE = "/admin/costs/usageevent/"
SMALL_EVENTS = 200


def _owner(org):
    from django.contrib.auth.models import User

    from profiles.models import Membership

    user = User.objects.create_user(username=new_key("owner"), is_staff=True)
    Membership.objects.create(user=user, organization=org, role=Membership.Role.OWNER)
    return user


def _operator():
    from django.contrib.auth.models import User

    return User.objects.create_superuser(username=new_key("operator"))


def _median_ms(user, calls: int) -> tuple[float, int]:
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    try:
        client = Client()
        client.force_login(user)
        assert client.get(PAGE).status_code == 200  # warm
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            response = client.get(PAGE)
            times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200
        with CaptureQueriesContext(connection) as captured:
            client.get(PAGE)
        return statistics.median(times), len(captured.captured_queries)
    finally:
        user.delete()


def test_admin_ledger_page(bench_db, machine):
    from costs.services import EventInput, usage_record

    events = env_int("BENCH_DASHBOARD_EVENTS", 500_000)
    calls = env_int("BENCH_ADMIN_CALLS", 15)
    big, _ = _dataset(events)
    small = make_tenant("admin-small", profiles=2).org
    from django.utils import timezone

    usage_record(
        org=small,
        events=[
            EventInput(
                idempotency_key=f"e-{i}",
                request_hash=f"e-{i}",
                provider="openai",
                model="gpt-4o",
                operation="chat",
                usage={"input_tokens": 10 + i, "output_tokens": 5},
                occurred_at=timezone.now(),
                profile=f"user-{i % 2}",
            )
            for i in range(SMALL_EVENTS)
        ],
    )
    from costs.models import UsageEvent
    from profiles.models import Organization

    big_ms, big_queries = _median_ms(_owner(big), calls)
    small_ms, small_queries = _median_ms(_owner(small), calls)
    operator_ms, operator_queries = _median_ms(_operator(), calls)
    context("admin_ledger", events=events, calls=calls, path="in-process (Django test client)",
            queries=f"{big_queries}/{small_queries}/{operator_queries}",
            operator_ledger_events=UsageEvent.objects.count(),
            operator_organizations=Organization.objects.count())  # fmt: skip
    emit(f"admin_ledger_page_{events}_events", big_ms, "ms")
    emit("admin_ledger_page_200_events", small_ms, "ms")
    emit_ratio(
        f"admin_ledger_page_{events}_events", "admin_ledger_page_200_events", big_ms / small_ms
    )
    target("admin_ledger", f"page grows < 2x with the ledger (measured {big_ms / small_ms:.2f}x)",
           big_ms / small_ms < 2)  # fmt: skip
    emit("admin_ledger_page_operator", operator_ms, "ms")
    emit_ratio("admin_ledger_page_operator", "admin_ledger_page_200_events", operator_ms / small_ms)
    target("admin_ledger", f"operator's page grows < 2x with the ledger (measured "
           f"{operator_ms / small_ms:.2f}x)", operator_ms / small_ms < 2)  # fmt: skip
