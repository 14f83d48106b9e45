"""Chaos soak: record N usage events through a real gunicorn while its workers
are SIGKILLed every few seconds and PostgreSQL is restarted once, with clients
that retry every request until it gets a definitive answer. Afterwards the
ledger must hold every idempotency key exactly once and the counters must
equal the ledger.

What runs at once:
- client threads (http.client, a new connection per request) sending the
  events, mostly in batches of 100-500 to /usage/batch, some one by one to
  /usage; each request is resent byte for byte on a connection error, a
  timeout or a 5xx, so only idempotency makes it exactly-once. Interleaved:
  pre-flight checks with ``reserve: true`` (ttl 2-5 s) whose hold is settled
  by an event citing it, released (DELETE), or abandoned; a few plain checks;
  a few deliberate replays of finished requests (must answer 200 with the
  first result);
- a chaos thread: SIGKILL one gunicorn worker every 2-4 s (the master
  respawns it), and once, at ~40% of the events, restart PostgreSQL
  (``pg_ctlcluster ... restart -m fast``; see SOAK_PG_CHAOS in conftest.py);
- the clients themselves: a few requests are resent at once without waiting
  for the first answer, so two attempts with the same keys race in the server;
- a beat thread in this process, as Celery beat would: expire stale
  reservations and reconcile the counters every few seconds; it must never
  find drift.

Then: every key in the ledger exactly once, count == N, each with the id its
answer carried; DailyUsage == ledger per rollup key (cost, events, every
meter, revenue); past every TTL no hold is left 'held'; every settled
reservation is cited by an event; periods_reconcile() finds zero drift.

Environment:
  SOAK_EVENTS         events to record (20,000)
  SOAK_CLIENTS        client threads (6)
  SOAK_TIME_LIMIT     seconds for the whole run (N * 0.03, within 120..600)
  SOAK_SEED           random seed (time-based; printed)
  SOAK_DROP_RATE      share of requests whose first answer the client does not wait
                      for: it resends at once, racing the first attempt (0.05)
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.soak.conftest import HOST, Postgres, Server, env_int

pytestmark = [pytest.mark.soak, pytest.mark.django_db(transaction=True)]

MIX = [
    ("openai", "gpt-4o-2024-08-06", "chat"),
    ("openai", "gpt-4o-mini", "chat"),
    ("openai", "gpt-4o", "summarize"),
    ("anthropic", "claude-sonnet-4-5", "chat"),
    ("google", "gemini-2.5-flash", "chat"),
    ("google", "gemini-2.5-pro", "extract"),
]
PROFILES = 40
REQUEST_TIMEOUT = 60  # gunicorn's --timeout is 30: a stuck worker is killed before this


class SoakTimeout(Exception):
    pass


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    retries: int = 0
    client_drops: int = 0
    conn_errors: Counter = field(default_factory=Counter)
    http_5xx: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)  # definitive non-2xx, bad entries
    acked: int = 0  # events with a definitive answer
    replayed_200: int = 0  # events first answered 200 (an earlier attempt had committed)
    deliberate_replays: int = 0
    checks: int = 0
    degraded_checks: int = 0
    reservations: Counter = field(default_factory=Counter)  # settle / release / abandon
    worker_kills: int = 0
    pg_restarts: int = 0
    pg_chaos: list[str] = field(default_factory=list)
    beat_runs: int = 0
    beat_errors: int = 0
    beat_expired: int = 0
    beat_drifts: list[object] = field(default_factory=list)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class Client:
    """Sends one request until it gets a definitive answer (anything but a
    connection error, a timeout or a 5xx), resending the same bytes."""

    def __init__(
        self, port: int, secret: str, stats: Stats, deadline: float, drop_rate: float
    ) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        self.stats = stats
        self.deadline = deadline
        self.drop_rate = drop_rate

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        attempt = 0
        while True:
            if time.monotonic() > self.deadline:
                raise SoakTimeout(f"{method} {path}: no definitive answer before the time limit")
            self.stats.add(requests=1)
            conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT)
            try:
                conn.request(method, path, body=body, headers=self.headers)
                if attempt == 0 and random.random() < self.drop_rate:  # noqa: S311
                    # The client gives up on this answer (a timeout of its own) and
                    # resends at once, while the server may still be recording it.
                    self.stats.add(client_drops=1)
                    raise ConnectionAbortedError("client dropped the request")
                resp = conn.getresponse()
                status, data = resp.status, resp.read()
            except (OSError, http.client.HTTPException) as exc:
                with self.stats.lock:
                    self.stats.conn_errors[type(exc).__name__] += 1
            else:
                if status < 500:
                    return status, data
                with self.stats.lock:
                    self.stats.http_5xx[status] += 1
            finally:
                conn.close()
            attempt += 1
            self.stats.add(retries=1)
            time.sleep(min(1.0, 0.05 * 2 ** min(attempt, 5)) * random.uniform(0.5, 1.5))  # noqa: S311


# -- the work ------------------------------------------------------------------------------


def make_events(n: int, run: str, rng: random.Random) -> list[dict]:
    now = datetime.now(UTC)
    events = []
    for i in range(n):
        provider, model, operation = rng.choice(MIX)
        inp, out = rng.randint(1, 6000), rng.randint(0, 3000)
        if provider == "openai" and rng.random() < 0.15:  # a raw OpenAI usage object
            usage: dict = {
                "prompt_tokens": inp,
                "completion_tokens": out,
                "total_tokens": inp + out,
            }
        else:
            usage = {"input_tokens": inp, "output_tokens": out}
            if rng.random() < 0.2:
                usage["cached_input_tokens"] = rng.randint(0, inp)
        ev: dict = {
            "idempotency_key": f"soak-{run}-{i:07d}",
            "provider": provider,
            "model": model,
            "operation": operation,
            "usage": usage,
            "occurred_at": (now - timedelta(seconds=rng.uniform(0, 30))).isoformat(),
            "tags": {"session_id": f"s-{i % 97}"},
        }
        if rng.random() < 0.85:
            ev["profile"] = f"soak-user-{rng.randrange(PROFILES)}"
        if rng.random() < 0.1:
            ev["revenue"] = f"{rng.randint(1, 500) / 100:.2f}"
        events.append(ev)
    return events


@dataclass
class Unit:
    kind: str  # batch | single | replay
    events: list[dict]
    mode: str = "plain"  # single: plain | settle | release | abandon
    reserve: int = 0  # batch: holds to take and settle through its events
    abandon: bool = False  # batch: also take one hold and never cite it


def plan(events: list[dict], rng: random.Random) -> list[Unit]:
    """~95% of the events in batches of 100-500, the rest one by one (in runs of 5-40)."""
    units: list[Unit] = []
    i, n = 0, len(events)
    while i < n:
        if rng.random() < 0.4 or n - i < 100:  # ~5% of the events
            count = min(n - i, rng.randint(5, 40))
            for ev in events[i : i + count]:
                units.append(
                    Unit(
                        "single",
                        [ev],
                        mode=rng.choice(["plain", "plain", "settle", "release", "abandon"]),
                    )
                )
        else:
            count = min(n - i, rng.randint(100, 500))
            r = rng.random()
            units.append(
                Unit("batch", events[i : i + count], reserve=rng.randint(1, 3) if r < 0.3 else 0,
                     abandon=0.3 <= r < 0.4)
            )  # fmt: skip
        i += count
    rng.shuffle(units)
    return units


@dataclass
class Book:
    """What the clients were told, for the checks afterwards."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: dict[str, str] = field(default_factory=dict)  # key -> event id first answered
    statuses: Counter = field(default_factory=Counter)
    reservations: dict[str, str] = field(default_factory=dict)  # id -> settle|release|abandon
    cited: set[str] = field(default_factory=set)  # reservation ids sent in events


class Soak:
    def __init__(self, client: Client, stats: Stats, book: Book, rng_seed: int) -> None:
        self.client = client
        self.stats = stats
        self.book = book
        self.seed = rng_seed
        self.errors: list[BaseException] = []

    # reservations
    def reserve(self, ev: dict, rng: random.Random) -> str | None:
        body = {
            "provider": ev["provider"],
            "model": ev["model"],
            "operation": ev["operation"],
            "estimate": {
                "input_tokens": rng.randint(100, 5000),
                "output_tokens": rng.randint(0, 2000),
            },
            "reserve": True,
            "reservation_ttl": rng.randint(2, 5),
        }
        if "profile" in ev:
            body["profile"] = ev["profile"]
        status, data = self.client.send("POST", "/api/v1/quota/check", json.dumps(body).encode())
        self.stats.add(checks=1)
        if status != 200:
            self._unexpected(f"reserve -> {status} {data[:300]!r}")
            return None
        answer = json.loads(data)
        if answer.get("degraded"):
            self.stats.add(degraded_checks=1)
        if not answer.get("allowed"):
            self._unexpected(f"reserve denied: {data[:300]!r}")
        return answer.get("reservation_id")

    def plain_check(self, ev: dict) -> None:
        body = {"provider": ev["provider"], "model": ev["model"],
                "estimate": {"input_tokens": 1000, "output_tokens": 500}}  # fmt: skip
        status, data = self.client.send("POST", "/api/v1/quota/check", json.dumps(body).encode())
        self.stats.add(checks=1)
        if status != 200:
            self._unexpected(f"check -> {status} {data[:300]!r}")

    def release(self, rid: str) -> None:
        status, data = self.client.send("DELETE", f"/api/v1/reservations/{rid}")
        if status != 204:
            self._unexpected(f"release {rid} -> {status} {data[:300]!r}")

    def _note_reservation(self, rid: str, fate: str) -> None:
        with self.book.lock:
            self.book.reservations[rid] = fate
        with self.stats.lock:
            self.stats.reservations[fate] += 1

    def _unexpected(self, text: str) -> None:
        with self.stats.lock:
            if len(self.stats.unexpected) < 200:
                self.stats.unexpected.append(text)

    # events
    def _judge(self, ev: dict, status: int, body: dict, *, replay: bool) -> None:
        key = ev["idempotency_key"]
        with self.book.lock:
            self.book.statuses[status] += 1
            first = self.book.ids.get(key)
            if status not in (200, 201) or "id" not in body:
                self._unexpected(f"{key}: {status} {json.dumps(body)[:300]}")
                return
            if replay:
                if status != 200 or first != body["id"]:
                    self._unexpected(f"{key}: replay answered {status} id {body['id']} != {first}")
                return
            if first is not None:
                self._unexpected(f"{key}: answered twice ({first}, {body['id']})")
                return
            self.book.ids[key] = body["id"]
        self.stats.add(acked=1, replayed_200=1 if status == 200 else 0)

    def single(self, unit: Unit, rng: random.Random) -> None:
        ev = dict(unit.events[0])
        if unit.mode != "plain":
            rid = self.reserve(ev, rng)
            if rid:
                self._note_reservation(rid, unit.mode)
                if unit.mode == "settle":
                    ev["reservation_id"] = rid
                    with self.book.lock:
                        self.book.cited.add(rid)
                elif unit.mode == "release":
                    self.release(rid)
                # abandon: the client "crashed" before settling; the hold must expire
        elif rng.random() < 0.1:
            self.plain_check(ev)
        unit.events[0] = ev  # a deliberate replay must resend this very body
        status, data = self.client.send("POST", "/api/v1/usage", json.dumps(ev).encode())
        self._judge(ev, status, _json(data), replay=False)

    def batch(self, unit: Unit, rng: random.Random) -> None:
        events = [dict(ev) for ev in unit.events]
        for ev in rng.sample(events, min(unit.reserve, len(events))):
            if rid := self.reserve(ev, rng):
                self._note_reservation(rid, "settle")
                ev["reservation_id"] = rid
                with self.book.lock:
                    self.book.cited.add(rid)
        if unit.abandon and (rid := self.reserve(events[0], rng)):
            self._note_reservation(rid, "abandon")
        unit.events = events
        body = json.dumps({"events": events}).encode()
        status, data = self.client.send("POST", "/api/v1/usage/batch", body)
        self._batch_results(events, status, data, replay=False)

    def replay(self, unit: Unit) -> None:
        self.stats.add(deliberate_replays=1)
        if len(unit.events) == 1:
            status, data = self.client.send(
                "POST", "/api/v1/usage", json.dumps(unit.events[0]).encode()
            )
            self._judge(unit.events[0], status, _json(data), replay=True)
            return
        body = json.dumps({"events": unit.events}).encode()
        status, data = self.client.send("POST", "/api/v1/usage/batch", body)
        self._batch_results(unit.events, status, data, replay=True)

    def _batch_results(self, events: list[dict], status: int, data: bytes, *, replay: bool) -> None:
        if status != 200:
            self._unexpected(f"batch -> {status} {data[:300]!r}")
            return
        results = _json(data).get("results") or []
        if len(results) != len(events):
            self._unexpected(f"batch: {len(results)} results for {len(events)} events")
            return
        for ev, result in zip(events, results, strict=True):
            self._judge(ev, result.get("status"), result, replay=replay)

    def worker(self, units: queue.Queue, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)  # noqa: S311
        try:
            while True:
                try:
                    unit = units.get_nowait()
                except queue.Empty:
                    return
                if unit.kind == "single":
                    self.single(unit, rng)
                elif unit.kind == "batch":
                    self.batch(unit, rng)
                else:
                    self.replay(unit)
                if unit.kind != "replay" and rng.random() < 0.03:
                    units.put(Unit("replay", unit.events))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.errors.append(exc)


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        return {"unparsable": data[:300].decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


# -- chaos and beat ----------------------------------------------------------------------------


def chaos(server: Server, pg: Postgres, stats: Stats, total: int, stop: threading.Event,
          seed: int, errors: list) -> None:  # fmt: skip
    rng = random.Random(seed + 7)  # noqa: S311
    restarted = pg.mode == "none"
    next_kill = time.monotonic() + rng.uniform(2, 4)
    try:
        while not stop.wait(0.2):
            # The first kill comes at 2-4 s or at 10% of the events, whichever is
            # first, so even a fast short run sees one.
            first = stats.worker_kills == 0 and stats.acked >= 0.1 * total
            if first or time.monotonic() >= next_kill:
                if server.kill_worker(rng):
                    stats.add(worker_kills=1)
                next_kill = time.monotonic() + rng.uniform(2, 4)
            if not restarted and stats.acked >= 0.4 * total:
                restarted = True
                began = time.monotonic()
                done = pg.hurt()
                stats.add(pg_restarts=1)
                stats.pg_chaos.append(f"{done} in {time.monotonic() - began:.1f}s")
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)


def beat(org, stats: Stats, stop: threading.Event) -> None:  # noqa: ANN001
    """What Celery beat would do meanwhile: expire holds, reconcile counters."""
    from django.db import DatabaseError, InterfaceError, connection

    from quotas.reconcile import periods_reconcile
    from quotas.services import reservations_expire

    try:
        while not stop.wait(3):
            try:
                expired = reservations_expire(org=org)
                drifts = periods_reconcile(org=org)
            except (DatabaseError, InterfaceError):
                stats.add(beat_errors=1)
                connection.close()
                continue
            stats.add(beat_runs=1, beat_expired=expired)
            with stats.lock:
                stats.beat_drifts.extend(drifts)
    finally:
        connection.close()


# -- the test ----------------------------------------------------------------------------------


def _seed_tenant():
    from quotas.services import budget_create
    from tests.factories import OrganizationFactory, make_key

    org = OrganizationFactory(slug="soak", name="Soak", timezone="UTC")
    _, secret = make_key(org, scopes="ingest,check,read")
    big = Decimal(10**11)
    budgets = [
        budget_create(org=org, name="Org monthly spend", metric="cost", period="monthly",
                      limit=big, action="block"),
        budget_create(org=org, name="Daily requests", metric="requests", period="daily",
                      limit=big, action="block"),
        budget_create(org=org, name="OpenAI monthly tokens", metric="total_tokens",
                      period="monthly", provider="openai", limit=big, action="warn"),
    ]  # fmt: skip
    return org, secret, budgets


def test_chaos_soak(catalog, soak_server: Server, postgres: Postgres, capsys):
    from django.db import connections

    total = env_int("SOAK_EVENTS", 20_000)
    clients = env_int("SOAK_CLIENTS", 6)
    limit = env_int("SOAK_TIME_LIMIT", int(min(600, max(120, total * 0.03))))
    seed = env_int("SOAK_SEED", int(time.time()) % 100_000)
    rng = random.Random(seed)  # noqa: S311
    run = uuid.uuid4().hex[:8]

    org, secret, _ = _seed_tenant()
    events = make_events(total, run, rng)
    units: queue.Queue = queue.Queue()
    for unit in plan(events, rng):
        units.put(unit)

    started = time.monotonic()
    deadline = started + limit
    stats, book = Stats(), Book()
    drop_rate = float(os.environ.get("SOAK_DROP_RATE", "0.05"))
    soak = Soak(Client(soak_server.port, secret, stats, deadline, drop_rate), stats, book, seed)
    stop = threading.Event()
    chaos_errors: list[BaseException] = []
    threads = [
        threading.Thread(target=soak.worker, args=(units, i), name=f"soak-client-{i}", daemon=True)
        for i in range(clients)
    ]
    side = [
        threading.Thread(target=chaos, args=(soak_server, postgres, stats, total, stop, seed,
                                             chaos_errors), name="soak-chaos", daemon=True),
        threading.Thread(target=beat, args=(org, stats, stop), name="soak-beat", daemon=True),
    ]  # fmt: skip
    for t in side + threads:
        t.start()
    try:
        for t in threads:
            t.join(timeout=max(1, deadline - time.monotonic() + REQUEST_TIMEOUT + 5))
    finally:
        stop.set()
        for t in side:
            t.join(timeout=120)
        soak_server.stop()  # quiescent from here on: no request in flight
    seconds = time.monotonic() - started
    connections.close_all()  # this thread's connection died with the restart
    postgres.ensure_running()

    with capsys.disabled():
        print(
            f"\nsoak: events={len(book.ids)} retries={stats.retries} "
            f"worker_kills={stats.worker_kills} pg_restarts={stats.pg_restarts} "
            f"seconds={seconds:.1f}",
            flush=True,
        )
        print(
            f"soak-detail: seed={seed} target={total} clients={clients} requests={stats.requests} "
            f"client_drops={stats.client_drops} conn_errors={dict(stats.conn_errors)} http_5xx={dict(stats.http_5xx)} "
            f"answered_200_after_retry={stats.replayed_200} deliberate_replays={stats.deliberate_replays} "
            f"statuses={dict(book.statuses)} checks={stats.checks} degraded={stats.degraded_checks} "
            f"reservations={dict(stats.reservations)} pg={stats.pg_chaos} "
            f"beat_runs={stats.beat_runs} beat_errors={stats.beat_errors} "
            f"beat_expired={stats.beat_expired} server_log={soak_server.log_counts()} "
            f"log={soak_server.log}",
            flush=True,
        )

    errors = soak.errors + chaos_errors
    assert not errors, f"client/chaos threads failed: {errors[:5]!r}"
    assert not any(t.is_alive() for t in threads), "client threads did not finish in time"
    assert not stats.unexpected, f"unexpected answers: {stats.unexpected[:20]}"
    assert len(book.ids) == total
    assert stats.worker_kills >= 1, "the chaos thread never killed a worker"
    if postgres.mode != "none":
        assert stats.pg_restarts == 1, f"PostgreSQL chaos did not happen: {postgres.log}"

    _check_ledger(org, events, book)
    _check_rollups(org)
    _check_reservations(org, book)
    _check_counters(org, stats)


def _check_ledger(org, events: list[dict], book: Book) -> None:  # noqa: ANN001
    from django.db.models import Count

    from costs.models import UsageEvent

    ledger = UsageEvent.objects.filter(organization=org)
    assert ledger.count() == len(events)
    dupes = list(ledger.values("idempotency_key").annotate(n=Count("id")).filter(n__gt=1)[:10])
    assert not dupes, f"keys recorded more than once: {dupes}"
    recorded = dict(ledger.values_list("idempotency_key", "id"))
    expected = {ev["idempotency_key"] for ev in events}
    assert set(recorded) == expected
    wrong = [(k, i, str(recorded[k])) for k, i in book.ids.items() if str(recorded[k]) != i]
    assert not wrong, f"answered ids differ from the ledger: {wrong[:10]}"


def _check_rollups(org) -> None:  # noqa: ANN001
    from django.db.models import Count, Q, Sum
    from django.db.models.functions import Coalesce

    from costs.models import COUNT_METERS, DailyUsage, UsageEvent

    keys = ["day", "profile_id", "provider", "model", "operation"]
    meters = [*COUNT_METERS, "audio_seconds", "cost"]
    ledger = {
        tuple(row[k] for k in keys): row
        for row in UsageEvent.objects.filter(organization=org)
        .values(*keys)
        .annotate(
            events=Count("id"),
            unpriced_events=Count("id", filter=Q(priced=False)),
            revenue=Coalesce(Sum("revenue"), Decimal(0)),
            **{f"{m}": Sum(m) for m in meters},
        )
    }
    rollups = {
        tuple(row[k] for k in keys): row
        for row in DailyUsage.objects.filter(organization=org).values(
            *keys, "events", "unpriced_events", "revenue", *meters
        )
    }
    assert set(ledger) == set(rollups), "rollup keys differ from the ledger's"
    columns = ["events", "unpriced_events", "revenue", *meters]
    diffs = [
        (key, c, ledger[key][c], rollups[key][c])
        for key in ledger
        for c in columns
        if Decimal(ledger[key][c] or 0) != Decimal(rollups[key][c] or 0)
    ]
    assert not diffs, f"DailyUsage differs from the ledger: {diffs[:10]}"
    totals = UsageEvent.objects.filter(organization=org).aggregate(
        n=Count("id"), cost=Sum("cost"), i=Sum("input_tokens"), o=Sum("output_tokens")
    )
    rolled = DailyUsage.objects.filter(organization=org).aggregate(
        n=Sum("events"), cost=Sum("cost"), i=Sum("input_tokens"), o=Sum("output_tokens")
    )
    assert totals == rolled


def _check_reservations(org, book: Book) -> None:  # noqa: ANN001
    from django.db.models import Max
    from django.utils import timezone

    from costs.models import UsageEvent
    from quotas.models import Reservation
    from quotas.services import reservations_expire

    reservations = Reservation.objects.filter(organization=org)
    last = reservations.aggregate(last=Max("expires_at"))["last"]
    if last is not None:  # real time: the server is another process
        wait = (last - timezone.now()).total_seconds() + 0.5
        assert wait < 30, f"a reservation expires {wait:.0f} s from now; TTLs are 2-5 s"
        if wait > 0:
            time.sleep(wait)
    reservations_expire(org=org)
    now = timezone.now()
    stale = reservations.filter(status=Reservation.Status.HELD, expires_at__lte=now).count()
    assert stale == 0, f"{stale} reservations still held past their expiry"
    status = dict(reservations.values_list("id", "status"))
    by_status = Counter(status.values())
    print(f"soak-reservations: {dict(by_status)}", flush=True)
    unknown = [rid for rid in book.reservations if uuid.UUID(rid) not in status]
    assert not unknown, f"reservations answered but not stored: {unknown[:5]}"
    bad = []
    for rid, fate in book.reservations.items():
        st = status[uuid.UUID(rid)]
        allowed = {"settle": {"settled", "expired"}, "release": {"released", "expired"},
                   "abandon": {"expired"}}[fate]  # fmt: skip
        if st not in allowed:
            bad.append((rid, fate, st))
    assert not bad, f"reservations ended wrongly (id, client did, status): {bad[:10]}"
    settled = {rid for rid, st in status.items() if st == "settled"}
    cited = set(
        UsageEvent.objects.filter(organization=org, reservation_id__in=settled).values_list(
            "reservation_id", flat=True
        )
    )
    assert settled == cited, f"settled without a citing event: {list(settled - cited)[:5]}"


def _check_counters(org, stats: Stats) -> None:  # noqa: ANN001
    from quotas.models import BudgetPeriod
    from quotas.reconcile import periods_reconcile

    assert not stats.beat_drifts, (
        f"reconciliation found drift during the run: {stats.beat_drifts[:5]}"
    )
    drifts = periods_reconcile(org=org)
    assert drifts == [], f"counters drifted from the ledger: {drifts}"
    live = BudgetPeriod.objects.filter(budget__organization=org, reserved__gt=0).count()
    assert live == 0, "holds are left on the counters after every reservation ended"
