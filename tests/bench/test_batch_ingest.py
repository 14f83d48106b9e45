"""Batch ingestion throughput: 1,000-event POST /api/v1/usage/batch requests
through gunicorn, with real keys, pricing, ledger rows, rollups and budget
charges (three budgets), from a few concurrent clients -> events/s.

Baseline in the same run: the same rows (same columns, read back from the
ledger) inserted by plain multi-row INSERTs with psycopg into a scratch copy of
the ledger table (``LIKE costs_usageevent INCLUDING ALL``: same indexes, checks
and defaults, no foreign keys, empty), from the same number of threads, 1,000
rows per statement and transaction -> rows/s. A second figure inserts them
(under new ids and keys) into ``costs_usageevent`` itself, with its foreign keys
and its current size: the difference between the two is the table's own cost,
between that one and the ingest figure the application's.

The run is split into rounds (ingest a share of the events, then the baseline
inserts those rows), so that a change in the machine's speed during the run
(another process, PostgreSQL writing out a checkpoint) falls on both figures
alike; each figure sums its rounds.

  BENCH_EVENTS          events in the timed run (default 20,000; rounded up to a request per client per round)
  BENCH_INGEST_CLIENTS  concurrent clients (default 4)
  BENCH_BATCH           events per request (default 1,000, the API's maximum)
  BENCH_BATCH_ROUNDS    rounds the run is split into (default 3)
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
from psycopg.types.string import TextLoader

from tests.bench.common import (
    CpuMeter,
    PgActivity,
    context,
    emit,
    emit_ratio,
    env_int,
    target,
)
from tests.bench.conftest import RUN_ID, TYPICAL_BUDGETS, make_tenant, new_key, pg_connect
from tests.bench.load import LoadResult, run_load

MIX = [
    ("openai", "gpt-4o-2024-08-06", "chat"),
    ("openai", "gpt-4o-mini", "chat"),
    ("anthropic", "claude-sonnet-4-5", "chat"),
    ("google", "gemini-2.5-flash", "chat"),
]
PROFILES = 50


def _events(n: int, first: int, run: str) -> list[dict]:
    out = []
    for i in range(first, first + n):
        provider, model, operation = MIX[i % len(MIX)]
        out.append(
            {
                "idempotency_key": f"{run}-{i}",
                "profile": f"user-{i % PROFILES}",
                "provider": provider,
                "model": model,
                "operation": operation,
                "usage": {"input_tokens": 400 + i % 1200, "output_tokens": 100 + i % 700},
                "tags": {"session_id": f"s-{i % 97}"},
            }
        )
    return out


def test_batch_ingest(server, machine):
    total = env_int("BENCH_EVENTS", 20_000)
    clients = env_int("BENCH_INGEST_CLIENTS", 4)
    size = env_int("BENCH_BATCH", 1000)
    rounds = max(1, env_int("BENCH_BATCH_ROUNDS", 3))
    # Whole waves of requests per round: a round's last wave is its slowest.
    per_round = -(-max(1, -(-total // size // rounds)) // clients) * clients
    tenant = make_tenant(
        "ingest",
        profiles=PROFILES,
        budgets=TYPICAL_BUDGETS,
    )  # fmt: skip
    headers = {**tenant.auth, "Content-Type": "application/json"}
    run = new_key("b")

    # Bodies are encoded before the clock starts: the client must not be the bottleneck.
    warm = [json.dumps({"events": _events(size, -(c + 1) * size, run + "w")}).encode()
            for c in range(clients)]  # fmt: skip
    # Answers are kept as bytes and read after the clock stops: decoding
    # 1,000 results per answer is work the client must not do on the clock.
    answers: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def on_response(client: int, status: int, data: bytes) -> None:
        with lock:
            answers.append((status, data))

    result: LoadResult | None = None
    baseline = {"rows": 0, "scratch_s": 0.0, "ledger_s": 0.0}
    for r in range(rounds):
        # Ingest and baseline take turns, a share of the events each round, so
        # drift in the machine's speed during the run falls on both alike.
        tag = f"{run}r{r}"
        bodies = [json.dumps({"events": _events(size, b * size, tag)}).encode()
                  for b in range(per_round)]  # fmt: skip

        def request(client: int, seq: int, bodies=bodies):
            body = warm[client] if seq < 0 else bodies[seq]
            return "POST", "/api/v1/usage/batch", body, headers

        window = run_load(
            server.port,
            request,
            clients=clients,
            count=per_round,
            warmup_per_client=1 if r == 0 else 0,
            on_response=on_response,
            timeout=300,
            cpu=CpuMeter(server.pid),
            activity=PgActivity(pg_connect),
        )
        result = window if result is None else result.add(window)
        scratch_rate, ledger_rate, rows = _baseline_insert(tenant.org.pk, tag, clients, size)
        baseline["rows"] += rows
        baseline["scratch_s"] += rows / scratch_rate if scratch_rate else 0.0
        baseline["ledger_s"] += rows / ledger_rate if ledger_rate else 0.0
    assert result is not None
    recorded = {"events": 0, "bad": 0}
    for status, data in answers:
        results = json.loads(data).get("results", []) if status == 200 else []
        ok = sum(1 for r in results if r.get("status") == 201)
        recorded["events"] += ok
        recorded["bad"] += size - ok
    events_per_s = recorded["events"] / result.wall
    baseline_rows_per_s = baseline["rows"] / baseline["scratch_s"] if baseline["scratch_s"] else 0.0
    ledger_rows_per_s = baseline["rows"] / baseline["ledger_s"] if baseline["ledger_s"] else 0.0

    machine.line(
        "batch_ingest",
        events=recorded["events"],
        batch=size,
        clients=clients,
        rounds=rounds,
        budgets=len(tenant.budgets),
        server=server.describe(),
        cpu=result.cpu,
    )
    context("batch_ingest", http=result.summary(), pg=result.pg, events_not_201=recorded["bad"],
            baseline_rows=baseline["rows"])  # fmt: skip
    emit("batch_ingest_throughput", events_per_s, "events/s")
    emit("batch_ingest_request_p50", result.pct_ms(50), "ms")
    emit("batch_ingest_request_p99", result.pct_ms(99), "ms")
    emit("raw_insert_throughput", baseline_rows_per_s, "rows/s")
    ratio = events_per_s / baseline_rows_per_s if baseline_rows_per_s else 0.0
    emit_ratio("batch_ingest_throughput", "raw_insert_throughput", ratio)
    emit("raw_insert_ledger_throughput", ledger_rows_per_s, "rows/s")
    emit_ratio(
        "batch_ingest_throughput",
        "raw_insert_ledger_throughput",
        events_per_s / ledger_rows_per_s if ledger_rows_per_s else 0.0,
    )
    target("batch_ingest", f"throughput >= 20000 events/s (measured {events_per_s:.0f})",
           events_per_s >= 20_000)  # fmt: skip
    target("batch_ingest", f"throughput >= 50% of raw INSERT (measured {ratio:.1%})", ratio >= 0.5)


def _ledger_rows(org_id, run: str) -> tuple[list[str], list[tuple]]:
    """This run's timed ledger rows, every column, JSON kept as text."""
    with pg_connect(autocommit=True) as conn:
        conn.adapters.register_loader("jsonb", TextLoader)
        conn.adapters.register_loader("json", TextLoader)
        cur = conn.execute(
            "SELECT * FROM costs_usageevent WHERE organization_id = %s AND idempotency_key LIKE %s"
            " ORDER BY idempotency_key",
            [org_id, f"{run}-%"],
        )
        return [d.name for d in cur.description], cur.fetchall()


def _timed_inserts(table: str, columns: list[str], rows: list[tuple], clients: int,
                   size: int) -> float:  # fmt: skip
    """rows/s of multi-row INSERTs of ``rows`` into ``table``, ``size`` rows per
    statement (autocommit: one transaction each), from ``clients`` connections."""
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    # Rendered before the clock starts (psycopg's client-side parsing of a
    # 32,000-placeholder statement takes longer than PostgreSQL's INSERT itself).
    with pg_connect() as conn:
        render = psycopg.ClientCursor(conn)
        statements = [
            render.mogrify(head + ", ".join([placeholders] * len(c)), [v for r in c for v in r])
            for c in chunks
        ]
    next_chunk = iter(range(len(chunks)))
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    conns = [pg_connect(autocommit=True) for _ in range(clients)]

    def worker(conn) -> None:
        ready.wait(timeout=60)
        while True:
            with lock:
                index = next(next_chunk, None)
            if index is None:
                return
            conn.execute(statements[index])

    try:
        threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in conns]
        for t in threads:
            t.start()
        ready.wait(timeout=60)
        t0 = time.perf_counter()
        for t in threads:
            t.join(timeout=600)
        wall = time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()
    return len(rows) / wall if wall else 0.0


def _baseline_insert(org_id, run: str, clients: int, size: int) -> tuple[float, float, int]:
    """(rows/s into a scratch copy of the ledger table, rows/s into the ledger
    table itself, rows) for plain multi-row INSERTs of this run's ledger rows."""
    columns, rows = _ledger_rows(org_id, run)
    scratch = f"bench_scratch_{RUN_ID}"
    with pg_connect(autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {scratch}")
        conn.execute(f"CREATE TABLE {scratch} (LIKE costs_usageevent INCLUDING ALL)")
    try:
        scratch_rate = _timed_inserts(scratch, columns, rows, clients, size)
        with pg_connect() as conn:
            copied = conn.execute(f"SELECT count(*) FROM {scratch}").fetchone()[0]
        assert copied == len(rows), (copied, len(rows))
    finally:
        with pg_connect(autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {scratch}")
    # The same rows again into the real ledger (its size, indexes and foreign
    # keys) under new ids and keys; they go with the run's tenant at the end.
    id_at, key_at = columns.index("id"), columns.index("idempotency_key")
    again = []
    for row in rows:
        row = list(row)
        row[id_at] = uuid.uuid4()
        row[key_at] = f"{row[key_at]}-raw"
        again.append(tuple(row))
    ledger_rate = _timed_inserts("costs_usageevent", columns, again, clients, size)
    return scratch_rate, ledger_rate, len(rows)
