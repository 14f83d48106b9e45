"""The limiter under real concurrency: PostgreSQL, real threads, real transactions.

Every worker thread has its own database connection (Django gives each thread
one) and closes it when done; a monitor thread reads the counters in a loop
while the workers run, so "never above the limit" is checked at every moment it
could be observed, not only at the end.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum
from rest_framework.test import APIClient

from quotas.models import BudgetPeriod, Reservation, ReservationHold
from quotas.services import (
    Dimensions,
    LimiterUnavailable,
    budget_create,
    quota_check,
    reservation_release,
)
from tests.factories import ProfileFactory
from tests.quotas.helpers import CHECK_URL, USAGE_URL, period_of, post_json, run_threads

pytestmark = pytest.mark.django_db(transaction=True)


class CounterMonitor:
    """Samples spent + reserved (and reserved alone) of some periods until stopped."""

    def __init__(self, period_ids: list[int]) -> None:
        self.period_ids = period_ids
        self.used: dict[int, list[Decimal]] = defaultdict(list)
        self.reserved: dict[int, list[Decimal]] = defaultdict(list)
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                rows = BudgetPeriod.objects.filter(pk__in=self.period_ids).values_list(
                    "pk", "spent", "reserved"
                )
                for pk, spent, reserved in rows:
                    self.used[pk].append(spent + reserved)
                    self.reserved[pk].append(reserved)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            connection.close()

    def __enter__(self) -> CounterMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the monitor thread hung"
        assert not self.errors, self.errors


def held_total(period: BudgetPeriod) -> Decimal:
    """The sum of the holds of still-held reservations on ``period``."""
    total = ReservationHold.objects.filter(
        period=period, reservation__status=Reservation.Status.HELD
    ).aggregate(total=Sum("amount"))["total"]
    return total or Decimal(0)


# -- (a) 200 reservations against one block budget ----------------------------------------------


def test_200_concurrent_reservations_never_pass_a_block_cost_budget(tenant_a, settings):
    settings.QUOTA_LOCK_TIMEOUT_MS = 30_000  # a slow host's queue is not an error here
    budget = budget_create(org=tenant_a.org, name="Cap", limit=Decimal("1.00"))
    period = period_of(budget)
    threads, per_thread = 20, 10  # 200 attempts of 0.05 = 10.00 asked of 1.00
    barrier = threading.Barrier(threads)
    outcomes: list[bool] = []
    lock = threading.Lock()
    dims = Dimensions(None, None, "openai", "gpt-4o", "chat")

    def work(i: int) -> None:
        barrier.wait(timeout=30)
        for _ in range(per_thread):
            result = quota_check(
                org=tenant_a.org, dims=dims, amounts={"cost": Decimal("0.05")}, reserve=True
            )
            with lock:
                outcomes.append(result.allowed)

    with CounterMonitor([period.pk]) as monitor:
        errors = run_threads(threads, work, timeout=60)

    assert errors == []  # no exception at all: denial is an answer, not an error
    # 1.00 / 0.05 = 20 granted; 200 - 20 = 180 denied.
    assert Counter(outcomes) == {True: 20, False: 180}
    samples = monitor.used[period.pk]
    assert len(samples) > 1, "the monitor never observed the counters"
    assert max(samples) <= Decimal("1.00"), max(samples)
    period.refresh_from_db()
    assert period.reserved == Decimal("1.00")
    assert period.spent == 0
    assert Reservation.objects.filter(status=Reservation.Status.HELD).count() == 20
    assert held_total(period) == Decimal("1.00")


# -- (b) a count budget through the HTTP endpoint -------------------------------------------------


def test_concurrent_http_checks_grant_exactly_a_count_budgets_limit(tenant_a):
    budget = budget_create(
        org=tenant_a.org, name="Calls", metric="requests", period="monthly", limit=Decimal(20)
    )
    period = period_of(budget)
    clients = 30
    barrier = threading.Barrier(clients)
    responses: list = [None] * clients

    def work(i: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_a.secret}")
        body = {
            "profile": f"user-{i % 5}",
            "provider": "openai",
            "model": "gpt-4o",
            "estimate": {"cost": "0.01"},
            "reserve": True,
        }
        barrier.wait(timeout=30)
        responses[i] = post_json(client, CHECK_URL, body)

    with CounterMonitor([period.pk]) as monitor:
        errors = run_threads(clients, work, timeout=60)

    assert errors == []
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 20, 429: 10}, statuses  # 30 asked of 20
    for response in responses:
        body = response.json()
        assert response["X-RateLimit-Limit"] == "20"
        assert "X-RateLimit-Remaining" in response
        assert "X-RateLimit-Reset" in response
        if response.status_code == 200:
            assert body["allowed"] is True
            assert body["reservation_id"]
        else:
            assert body["error"] == "quota_exceeded"
            assert body["allowed"] is False
            assert body["reservation_id"] is None
            assert int(response["Retry-After"]) >= 1
            assert response["X-RateLimit-Remaining"] == "0"
    granted = {r.json()["reservation_id"] for r in responses if r.status_code == 200}
    assert len(granted) == 20  # 20 distinct reservations
    assert max(monitor.used[period.pk]) <= 20
    period.refresh_from_db()
    assert period.reserved == 20
    assert held_total(period) == 20


# -- (c) two budgets, overlapping combinations -----------------------------------------------------


def test_reservations_on_overlapping_budgets_neither_deadlock_nor_overshoot(tenant_a, settings):
    # Only PostgreSQL's deadlock detector may refuse here, not a slow host's queue.
    settings.QUOTA_LOCK_TIMEOUT_MS = 30_000
    org = tenant_a.org
    mine = ProfileFactory(organization=org, external_id="p-capped")
    other = ProfileFactory(organization=org, external_id="p-free")
    org_cap = budget_create(org=org, name="Org cap", limit=Decimal("1.00"))
    profile_cap = budget_create(org=org, name="Profile cap", limit=Decimal("0.50"), profile=mine)
    org_period, profile_period = period_of(org_cap), period_of(profile_cap)
    # Three combinations: both budgets (mine), the org cap only (other profile, no profile).
    combos = [
        Dimensions(mine.pk, None, "openai", "gpt-4o", "chat"),
        Dimensions(other.pk, None, "openai", "gpt-4o", "chat"),
        Dimensions(None, None, "anthropic", "claude-sonnet-4-5", "chat"),
    ]
    threads, per_thread = 24, 10
    barrier = threading.Barrier(threads)
    granted: list[tuple[int, bool]] = []  # (combo, released again)
    lock = threading.Lock()

    def work(i: int) -> None:
        barrier.wait(timeout=30)
        for j in range(per_thread):
            combo = (i + j) % 3
            result = quota_check(
                org=org, dims=combos[combo], amounts={"cost": Decimal("0.05")}, reserve=True
            )
            if not result.allowed:
                continue
            # Every fourth grant is released at once: releases take the same locks.
            release = (i + j) % 4 == 0
            if release:
                reservation_release(org=org, reservation_id=result.reservation.pk)
            with lock:
                granted.append((combo, release))

    with CounterMonitor([org_period.pk, profile_period.pk]) as monitor:
        errors = run_threads(threads, work, timeout=60)

    # A deadlock would surface as a hung thread (run_threads fails) or as PostgreSQL's
    # deadlock error, which quota_check raises as LimiterUnavailable.
    assert not [e for e in errors if isinstance(e, LimiterUnavailable)], errors
    assert errors == []
    assert max(monitor.used[org_period.pk]) <= Decimal("1.00")
    assert max(monitor.used[profile_period.pk]) <= Decimal("0.50")
    org_period.refresh_from_db()
    profile_period.refresh_from_db()
    # Counters equal the holds still held, on both budgets.
    assert org_period.reserved == held_total(org_period)
    assert profile_period.reserved == held_total(profile_period)
    kept = Counter(combo for combo, released in granted if not released)
    # Each kept grant holds 0.05 on the org cap; kept grants of combo 0 also on the profile cap.
    assert org_period.reserved == Decimal("0.05") * sum(kept.values())
    assert profile_period.reserved == Decimal("0.05") * kept[0]
    assert profile_period.reserved <= Decimal("0.50")
    # Demand (240 * 0.05 = 12.00) far exceeds the org cap: it ends full, but
    # for what grants released after the other threads' last checks left
    # (a release is not always followed by a check). Checks now take exactly
    # that room, and no more: no capacity was lost or made up.
    room = Decimal("1.00") - org_period.reserved
    taken = 0
    for _ in range(21):  # the whole cap and one more, at most
        if not quota_check(
            org=org, dims=combos[2], amounts={"cost": Decimal("0.05")}, reserve=True
        ).allowed:
            break
        taken += 1
    assert Decimal("0.05") * taken == room
    org_period.refresh_from_db()
    assert org_period.reserved == Decimal("1.00") == held_total(org_period)


# -- (d) one reservation settled twice at once ------------------------------------------------------


def test_settling_one_reservation_from_two_concurrent_ingests_releases_it_once(tenant_a):
    budget = budget_create(org=tenant_a.org, name="Cap", limit=Decimal("1.00"))
    period = period_of(budget)
    dims = Dimensions(None, None, "acme-ai", "m1", "default")
    # A witness hold that nobody settles: a double release would eat into it.
    witness = quota_check(
        org=tenant_a.org, dims=dims, amounts={"cost": Decimal("0.02375")}, reserve=True
    )
    assert witness.allowed
    rounds = 4
    results: list[int] = []
    lock = threading.Lock()

    with CounterMonitor([period.pk]) as monitor:
        for n in range(rounds):
            held = quota_check(
                org=tenant_a.org, dims=dims, amounts={"cost": Decimal("0.02375")}, reserve=True
            )
            assert held.allowed
            rid = str(held.reservation.pk)
            barrier = threading.Barrier(2)
            # The two events cost 0.0125 and 0.02375 (client-priced: the catalog has no
            # price for acme-ai), and both cite the same reservation.
            costs = ["0.0125", "0.02375"]

            def work(i: int, rid: str = rid, n: int = n, barrier=barrier, costs=costs) -> None:
                client = APIClient()
                client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_a.secret}")
                body = {
                    "idempotency_key": f"round-{n}-event-{i}",
                    "provider": "acme-ai",
                    "model": "m1",
                    "cost": costs[i],
                    "reservation_id": rid,
                }
                barrier.wait(timeout=30)
                response = post_json(client, USAGE_URL, body)
                with lock:
                    results.append(response.status_code)

            errors = run_threads(2, work, timeout=60)
            assert errors == []
            assert Reservation.objects.get(pk=rid).status == Reservation.Status.SETTLED

    assert results == [201] * (2 * rounds)
    period.refresh_from_db()
    # Each round: the hold (0.02375) came off once, both events were charged.
    # reserved = the witness only = 0.02375 (a second release would have taken it to 0).
    assert period.reserved == Decimal("0.02375")
    # spent = 4 rounds * (0.0125 + 0.02375) = 4 * 0.03625 = 0.145
    assert period.spent == Decimal("0.145")
    assert min(monitor.reserved[period.pk]) >= 0
    assert Reservation.objects.get(pk=witness.reservation.pk).status == Reservation.Status.HELD
    assert held_total(period) == Decimal("0.02375")
