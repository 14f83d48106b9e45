"""Shared pieces of the benchmarks: output lines, the machine's context, and a
CPU meter for the server / database / client processes (the HTTP load
generator is ``tests.bench.load``).

Every figure is printed as ``bench: <name> <value> <unit>``; a ratio against a
baseline measured in the same run as ``bench: <name>/<baseline> <ratio>``.
Context and targets get their own prefixes (``bench-context:``,
``bench-target:``) so a reader of figures can skip them."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

HOST = "127.0.0.1"  # benchmarks never talk to anything else


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


# -- output ----------------------------------------------------------------------------


def _fmt(value: float | int | Decimal) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def emit(name: str, value: float, unit: str) -> None:
    print(f"bench: {name} {_fmt(value)} {unit}", flush=True)


def emit_ratio(name: str, baseline: str, ratio: float) -> None:
    print(f"bench: {name}/{baseline} {ratio:.3f}", flush=True)


def context(bench: str, **items: object) -> None:
    info = " ".join(f"{k}={v}" for k, v in items.items())
    print(f"bench-context: {bench} {info}", flush=True)


def target(bench: str, text: str, met: bool) -> None:
    print(f"bench-target: {bench} {text}: {'met' if met else 'NOT met'}", flush=True)


# -- CPU accounting --------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    return [name, *raw.rsplit(")", 1)[1].split()]  # [comm, state, ppid, ...]


def _ticks(fields: list[str] | None, *, children: bool = False) -> int:
    if fields is None:
        return 0
    own = int(fields[12]) + int(fields[13])  # utime + stime
    return own + (int(fields[14]) + int(fields[15]) if children else 0)  # + waited-for children


def _machine_busy() -> int:
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in cpu]
    return sum(values) - values[3] - values[4]  # all but idle and iowait


class CpuMeter:
    """CPU cores kept busy, between ``start()`` and ``stop()``, by the app server
    (gunicorn master + workers), PostgreSQL (the postmaster and every backend,
    including exited ones through the postmaster's children times, whichever
    database they serve), this client process, and the whole machine (other
    users' work included: a busy machine makes every figure worse). /proc only."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def _sample(self) -> dict[str, int]:
        procs = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                fields = _stat(int(entry.name))
                if fields is not None:
                    procs[int(entry.name)] = fields
        app = 0
        if self.server_pid in procs:
            app = _ticks(procs[self.server_pid], children=True) + sum(
                _ticks(f) for f in procs.values() if int(f[2]) == self.server_pid
            )
        pg = {pid: f for pid, f in procs.items() if f[0] == "postgres"}
        db = 0
        for pid, f in pg.items():
            master = int(f[2]) not in pg
            db += _ticks(f, children=master)
        return {"app": app, "db": db, "client": _ticks(procs.get(os.getpid())),
                "machine": _machine_busy()}  # fmt: skip

    def start(self) -> CpuMeter:
        self._t0 = time.perf_counter()
        self._s0 = self._sample()
        return self

    def stop(self) -> str:
        wall = time.perf_counter() - self._t0
        s1 = self._sample()
        parts = []
        for k in ("app", "db", "client", "machine"):
            cores = (s1[k] - self._s0[k]) / _TICK / wall if wall else 0.0
            parts.append(f"{k}={cores:.2f}")
        return "cpu_cores_busy(" + ",".join(parts) + f",of={os.cpu_count()})"


class PgActivity:
    """Samples pg_stat_activity of one database every ``interval`` seconds in a
    thread, and tells how many client sessions were, on average, running on
    CPU, waiting for a lock, waiting on WAL / disk, or idle in a transaction
    (waiting for the app between statements), and how many were idle."""

    def __init__(self, connect: Callable[[], object], interval: float = 0.02) -> None:
        self._connect = connect
        self._interval = interval
        self._stop = threading.Event()
        self._counts: Counter = Counter()
        self._blocked_on: Counter = Counter()  # statements that waited for a lock
        self._samples = 0

    def _bucket(self, state: str | None, kind: str | None, event: str | None) -> str:
        if state == "idle":
            return "idle"
        if state and state.startswith("idle in transaction"):
            return "idle_in_tx"
        if kind in ("Lock", "LWLock"):
            return "lock" if kind == "Lock" else "lwlock"
        if kind in ("IO",) or (event or "").startswith("WAL"):
            return "io"
        if kind is None:
            return "cpu"
        return kind.lower()

    def _run(self) -> None:
        with self._connect() as conn:
            conn.autocommit = True
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event, left(query, 200)"
                    " FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                ).fetchall()
                for state, kind, event, query in rows:
                    bucket = self._bucket(state, kind, event)
                    self._counts[bucket] += 1
                    if bucket == "lock":
                        self._blocked_on[_statement_shape(query)] += 1
                self._samples += 1
                self._stop.wait(self._interval)

    def __enter__(self) -> PgActivity:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> str:
        if not self._samples:
            return "pg_sessions()"
        order = ["cpu", "lock", "lwlock", "io", "idle_in_tx", "client", "idle"]
        keys = sorted(self._counts, key=lambda k: (order.index(k) if k in order else 99, k))
        avg = ",".join(f"{k}={self._counts[k] / self._samples:.2f}" for k in keys)
        blocked = ""
        if self._blocked_on:
            top = self._blocked_on.most_common(2)
            total = sum(self._blocked_on.values())
            blocked = (
                " lock_waits_in(" + ";".join(f"{shape}={n / total:.0%}" for shape, n in top) + ")"
            )
        return f"pg_sessions_avg({avg}){blocked}"


def _statement_shape(query: str | None) -> str:
    """'UPDATE quotas_budgetperiod', 'INSERT costs_dailyusage': verb and first table."""
    words = (query or "").replace('"', " ").replace("(", " ").split()
    if not words:
        return "?"
    verb = words[0].upper()
    for marker in ("UPDATE", "INTO", "FROM"):
        for i, w in enumerate(words[:-1]):
            if w.upper() == marker and (marker != "UPDATE" or i == 0):
                return f"{verb}_{words[i + 1]}"
    return verb


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())
