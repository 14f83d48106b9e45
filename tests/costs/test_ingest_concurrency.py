"""Recording usage under real concurrency: PostgreSQL, real threads, real transactions.

Each thread talks to the API through its own APIClient and gets its own database
connection, which it closes when it is done.
"""

from __future__ import annotations

import json
import queue
import random
import threading
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count, Q, Sum

from costs.models import DailyUsage, UsageEvent
from profiles.models import Profile
from quotas.models import BudgetPeriod
from quotas.services import budget_create
from quotas.spend import spend_between

pytestmark = pytest.mark.django_db(transaction=True)

USAGE_URL = "/api/v1/usage"
BATCH_URL = "/api/v1/usage/batch"
THREADS = 8
MILLION = Decimal(1_000_000)


def per_million(dollars: str) -> Decimal:
    return Decimal(dollars) / MILLION


# Published list prices per 1M tokens: (input, output).
PUBLISHED = {
    "gpt-4o": (per_million("2.50"), per_million("10")),
    "gpt-4o-mini": (per_million("0.15"), per_million("0.60")),
    "not-in-catalog": (Decimal(0), Decimal(0)),  # recorded unpriced at 0
}


def post(client, body, url: str = USAGE_URL):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def run_in_threads(count: int, work) -> list[BaseException]:
    """Run ``work(i)`` in ``count`` threads; each closes its DB connection at the end."""
    errors: list[BaseException] = []

    def runner(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    return errors


def send_from_threads(tenant, work: list[tuple[list[int], bool]], send) -> list[BaseException]:
    """``send(client, indexes, as_batch)`` for every item of ``work``, from
    THREADS threads taking items as they free up, each with its own client."""
    items: queue.Queue = queue.Queue()
    for item in work:
        items.put(item)

    def worker(_: int) -> None:
        client = tenant.client()
        while True:
            try:
                indexes, as_batch = items.get_nowait()
            except queue.Empty:
                return
            send(client, indexes, as_batch)

    return run_in_threads(THREADS, worker)


def make_event(i: int) -> dict:
    model = ("gpt-4o", "gpt-4o-mini", "not-in-catalog")[i % 3]
    body = {
        "idempotency_key": f"evt-{i:04d}",
        "provider": "openai",
        "model": model,
        "operation": ("chat", "embed")[i % 2],
        "usage": {"input_tokens": 100 + i, "output_tokens": 10 + (i % 17)},
        "occurred_at": f"2026-11-{20 + i % 3:02d}T{i % 24:02d}:15:00Z",
        "tags": {"n": str(i)},
    }
    if i % 5:
        body["profile"] = f"user-{i % 4}"
    return body


def expected_cost(body: dict) -> Decimal:
    rate_in, rate_out = PUBLISHED[body["model"]]
    return body["usage"]["input_tokens"] * rate_in + body["usage"]["output_tokens"] * rate_out


def assert_rollups_equal_ledger(org) -> None:
    keys = ("day", "profile_id", "provider", "model", "operation")
    sums = ("cost", "input_tokens", "output_tokens")
    ledger = {
        tuple(r[k] for k in keys): (
            *(r[f"s_{c}"] for c in sums),
            r["s_events"],
            r["s_unpriced"],
        )
        for r in UsageEvent.objects.filter(organization=org)
        .values(*keys)
        .annotate(
            **{f"s_{c}": Sum(c) for c in sums},
            s_events=Count("id"),
            s_unpriced=Count("id", filter=Q(priced=False)),
        )
    }
    rows = DailyUsage.objects.filter(organization=org).values(
        *keys, *sums, "events", "unpriced_events"
    )
    rollups = {}
    for r in rows:
        key = tuple(r[k] for k in keys)
        assert key not in rollups, f"two rollup rows for {key}"
        rollups[key] = (*(r[c] for c in sums), r["events"], r["unpriced_events"])
    assert rollups == ledger


def test_replaying_1000_events_concurrently_records_each_exactly_once(catalog, tenant_a):
    events = [make_event(i) for i in range(1000)]
    responses: list[tuple[int, int, str | None]] = []  # (event index, status, id)
    record = responses.append  # list.append is atomic under the GIL

    def send(client, indexes: list[int], as_batch: bool) -> None:
        if as_batch:
            response = post(client, {"events": [events[i] for i in indexes]}, BATCH_URL)
            assert response.status_code == 200, response.content[:300]
            results = response.json()["results"]
            assert [r["index"] for r in results] == list(range(len(indexes)))
            for i, result in zip(indexes, results, strict=True):
                record((i, result["status"], result.get("id")))
        else:
            (i,) = indexes
            response = post(client, events[i])
            record((i, response.status_code, response.json().get("id")))

    # Phase 1, one client, in order: the first copy of events 500-999 (batches and singles).
    client = tenant_a.client()
    for start in range(500, 750, 50):
        send(client, list(range(start, start + 50)), as_batch=True)
    for i in range(750, 1000):
        send(client, [i], as_batch=False)

    # Phase 2, 8 threads, shuffled: both copies of events 0-499 (racing each other) and the
    # second copy of events 500-999 (replays of committed rows): 1,500 of the 2,000 sends.
    rng = random.Random(20261122)
    sends = [*range(500), *range(500), *range(500, 1000)]
    rng.shuffle(sends)
    work: list[tuple[list[int], bool]] = []
    position = 0
    while position < len(sends):
        if len(work) % 2 == 0:
            work.append((sends[position : position + 50], True))
            position += 50
        else:
            work.extend(([i], False) for i in sends[position : position + 25])
            position += 25
    rng.shuffle(work)
    assert sum(len(indexes) for indexes, _ in work) == 1500

    errors = send_from_threads(tenant_a, work, send)
    assert errors == []

    assert len(responses) == 2000
    statuses = Counter(status for _, status, _ in responses)
    assert set(statuses) <= {200, 201}, statuses
    assert statuses[201] == 1000
    assert statuses[200] == 1000
    per_event: dict[int, list[tuple[int, str | None]]] = defaultdict(list)
    for i, status, event_id in responses:
        per_event[i].append((status, event_id))
    assert all(sorted(s for s, _ in answers) == [200, 201] for answers in per_event.values())
    assert all(len({e for _, e in answers}) == 1 for answers in per_event.values())

    rows = UsageEvent.objects.filter(organization=tenant_a.org)
    assert rows.count() == 1000
    keys = list(rows.values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys)) == 1000
    assert set(keys) == {e["idempotency_key"] for e in events}
    ids = dict(rows.values_list("idempotency_key", "id"))
    assert all(
        str(ids[events[i]["idempotency_key"]]) == answers[0][1] for i, answers in per_event.items()
    )

    # Costs from the published prices: per event input x rate + output x rate
    # (gpt-4o $2.50/$10 per M, gpt-4o-mini $0.15/$0.60 per M, unknown model 0).
    hand_total = sum((expected_cost(e) for e in events), Decimal(0))
    assert rows.aggregate(s=Sum("cost"))["s"] == hand_total
    assert (
        DailyUsage.objects.filter(organization=tenant_a.org).aggregate(s=Sum("cost"))["s"]
        == hand_total
    )
    assert DailyUsage.objects.aggregate(s=Sum("events"))["s"] == 1000
    assert (
        DailyUsage.objects.aggregate(s=Sum("unpriced_events"))["s"] == 333
    )  # i % 3 == 2: i = 2, 5, ..., 998
    assert_rollups_equal_ledger(tenant_a.org)


def race(bodies: list[dict], tenant) -> list:
    """Send ``bodies`` at the same moment, one thread each; return the responses."""
    barrier = threading.Barrier(len(bodies))
    answers: list = [None] * len(bodies)

    def work(i: int) -> None:
        client = tenant.client()
        barrier.wait(timeout=30)
        answers[i] = post(client, bodies[i])

    errors = run_in_threads(len(bodies), work)
    assert errors == []
    return answers


def test_same_key_with_different_bodies_racing_gives_one_201_and_one_409(catalog, tenant_a):
    for n in range(20):
        key = f"race-conflict-{n}"
        bodies = [
            {
                "idempotency_key": key,
                "provider": "openai",
                "model": "gpt-4o",
                "usage": {"input_tokens": tokens, "output_tokens": 0},
                "occurred_at": "2026-11-22T10:00:00Z",
            }
            for tokens in (1000, 2000)
        ]

        first, second = race(bodies, tenant_a)

        assert sorted([first.status_code, second.status_code]) == [201, 409], n
        winner, loser = (first, second) if first.status_code == 201 else (second, first)
        assert loser.json()["error"] == "idempotency_conflict"
        row = UsageEvent.objects.get(organization=tenant_a.org, idempotency_key=key)
        assert str(row.id) == winner.json()["id"]
        # The row holds the winner's body: 1,000 x $2.50/M = 0.0025 or 2,000 x $2.50/M = 0.005
        assert row.cost == row.input_tokens * per_million("2.50")
        assert winner.json()["cost"] == f"{row.cost:.12f}"

    assert UsageEvent.objects.filter(organization=tenant_a.org).count() == 20
    assert DailyUsage.objects.get(organization=tenant_a.org).events == 20
    assert_rollups_equal_ledger(tenant_a.org)


def test_same_key_with_the_same_body_racing_gives_one_201_and_one_200(catalog, tenant_a):
    for n in range(20):
        body = {
            "idempotency_key": f"race-replay-{n}",
            "profile": f"racer-{n % 3}",
            "provider": "openai",
            "model": "gpt-4o",
            "usage": {"input_tokens": 1500, "output_tokens": 2000},
            "occurred_at": "2026-11-22T10:00:00Z",
        }

        first, second = race([body, dict(body)], tenant_a)

        assert sorted([first.status_code, second.status_code]) == [200, 201], n
        assert first.json() == second.json()
        # 1,500 x $2.50/M + 2,000 x $10/M = 0.00375 + 0.02 = 0.02375
        assert first.json()["cost"] == "0.023750000000"

    assert UsageEvent.objects.filter(organization=tenant_a.org).count() == 20
    total = DailyUsage.objects.filter(organization=tenant_a.org).aggregate(
        events=Sum("events"), cost=Sum("cost")
    )
    assert total["events"] == 20
    assert total["cost"] == 20 * Decimal("0.02375")
    assert_rollups_equal_ledger(tenant_a.org)


def test_singles_and_batches_racing_on_shared_budgets_charge_every_event_once(catalog, tenant_a):
    """Single events (one statement: ledger, rollup, counters) and batches (a
    transaction) on the same rollup rows and budget counters, with replays:
    no deadlock, every event once in the ledger, rollups and counters."""
    org = tenant_a.org
    budgets = [
        budget_create(org=org, name="Spend", metric="cost", period="monthly",
                      limit=Decimal(10**6)),
        budget_create(org=org, name="Calls", metric="requests", period="daily", action="warn",
                      limit=Decimal(10**6)),
        budget_create(org=org, name="Mini tokens", metric="total_tokens", period="weekly",
                      model="gpt-4o-mini", limit=Decimal(10**9)),
        budget_create(org=org, name="user-1 spend", metric="cost", period="monthly",
                      profile=Profile.objects.create(organization=org, external_id="user-1"),
                      limit=Decimal(10**6)),
    ]  # fmt: skip

    def body(i: int) -> dict:
        # No occurred_at: every event falls in the budgets' current periods.
        return {
            "idempotency_key": f"mix-{i:03d}",
            "profile": f"user-{i % 3}",
            "provider": "openai",
            "model": ("gpt-4o", "gpt-4o-mini")[i % 2],
            "operation": "chat",
            "usage": {"input_tokens": 100 + i, "output_tokens": 10 + i % 7},
        }

    rng = random.Random(7)
    work: list[tuple[list[int], bool]] = []
    for start in range(0, 300, 30):  # each event twice: once alone, once in a batch of 30
        work.append((list(range(start, start + 30)), True))
        work.extend(([i], False) for i in range(start, start + 30))
    rng.shuffle(work)
    statuses: list[int] = []

    def send(client, indexes: list[int], as_batch: bool) -> None:
        if as_batch:
            response = post(client, {"events": [body(i) for i in indexes]}, BATCH_URL)
            assert response.status_code == 200, response.content[:300]
            statuses.extend(r["status"] for r in response.json()["results"])
        else:
            response = post(client, body(indexes[0]))
            statuses.append(response.status_code)

    assert send_from_threads(tenant_a, work, send) == []

    assert Counter(statuses) == {201: 300, 200: 300}
    assert UsageEvent.objects.filter(organization=org).count() == 300
    assert_rollups_equal_ledger(org)
    for budget in budgets:
        period = BudgetPeriod.objects.get(budget=budget)
        assert period.spent == spend_between(budget, period.start, period.end), budget.name
        assert period.reserved == 0
    calls = BudgetPeriod.objects.get(budget=budgets[1])
    assert calls.spent == 300
