"""Shared pieces of the benchmarks: output lines, the machine's context, a CPU
meter for the server / database / client processes, and a closed-loop HTTP
load generator (stdlib ``http.client`` in threads, keep-alive connections).

Every figure is printed as ``bench: <name> <value> <unit>``; a ratio against a
baseline measured in the same run as ``bench: <name>/<baseline> <ratio>``.
Context and targets get their own prefixes (``bench-context:``,
``bench-target:``) so a reader of figures can skip them."""

from __future__ import annotations

import http.client
import itertools
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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


# -- HTTP load -------------------------------------------------------------------------

RequestSpec = tuple[str, str, bytes | None, dict[str, str]]  # method, path, body, headers


@dataclass
class LoadResult:
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, of every answered request
    statuses: Counter = field(default_factory=Counter)
    failures: int = 0  # connection errors, timeouts (no HTTP answer)
    cpu: str = ""
    pg: str = ""

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.count / self.wall if self.wall else 0.0

    def pct_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index] * 1000

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    def ok(self, accepted: tuple[int, ...] = (200, 201)) -> int:
        return sum(n for s, n in self.statuses.items() if s in accepted)

    def summary(self) -> str:
        codes = ",".join(f"{s}:{n}" for s, n in sorted(self.statuses.items()))
        return f"requests={self.count} statuses={codes or '-'} failures={self.failures}"

    def add(self, other: LoadResult) -> LoadResult:
        """This run and ``other`` (another window of the same scenario) as one:
        time, requests and statuses summed; the CPU and session figures of
        each window kept, separated by ``;``."""
        self.wall += other.wall
        self.latencies += other.latencies
        self.statuses += other.statuses
        self.failures += other.failures
        self.cpu = ";".join(x for x in (self.cpu, other.cpu) if x)
        self.pg = ";".join(x for x in (self.pg, other.pg) if x)
        return self


def run_load(
    port: int,
    make_request: Callable[[int, int], RequestSpec],
    *,
    clients: int,
    duration: float | None = None,
    count: int | None = None,
    warmup_per_client: int = 0,
    on_response: Callable[[int, int, bytes], None] | None = None,
    timeout: float = 60.0,
    cpu: CpuMeter | None = None,
    activity: PgActivity | None = None,
) -> LoadResult:
    """Closed loop: ``clients`` threads, each on its own keep-alive connection,
    send ``make_request(client, seq)`` back to back until ``duration`` seconds
    have passed or ``count`` requests were sent in all (whichever comes first;
    at least one of the two must be given). ``warmup_per_client`` requests per
    thread go first and are not counted. Bounded: a request that takes longer
    than ``timeout`` is a failure, and the whole run is abandoned after
    ``duration`` (or ``count`` x ``timeout`` / ``clients``) plus ``timeout``."""
    if duration is None and count is None:
        raise ValueError("give duration, count, or both")
    result = LoadResult()
    lock = threading.Lock()
    seq = itertools.count()
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    stop = threading.Event()
    state = {"deadline": float("inf")}

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(HOST, port, timeout=timeout)

    def send(conn: http.client.HTTPConnection, spec: RequestSpec):
        method, path, body, headers = spec
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data

    def worker(client: int) -> None:
        conn = connect()
        local_lat: list[float] = []
        local_status: Counter = Counter()
        failures = 0
        try:
            for w in range(warmup_per_client):
                try:
                    send(conn, make_request(client, -1 - w))
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = connect()
            ready.wait(timeout=timeout)
            go.wait(timeout=timeout)
            while not stop.is_set():
                n = next(seq)
                if count is not None and n >= count:
                    break
                if time.perf_counter() >= state["deadline"]:
                    break
                spec = make_request(client, n)
                t0 = time.perf_counter()
                try:
                    status, data = send(conn, spec)
                except (OSError, http.client.HTTPException):
                    # The server may close an idle keep-alive connection: one retry.
                    conn.close()
                    conn = connect()
                    try:
                        t0 = time.perf_counter()
                        status, data = send(conn, spec)
                    except (OSError, http.client.HTTPException):
                        failures += 1
                        conn.close()
                        conn = connect()
                        continue
                local_lat.append(time.perf_counter() - t0)
                local_status[status] += 1
                if on_response is not None:
                    on_response(client, status, data)
        except threading.BrokenBarrierError:
            failures += 1
        finally:
            conn.close()
            with lock:
                result.latencies.extend(local_lat)
                result.statuses.update(local_status)
                result.failures += failures

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait(timeout=timeout + warmup_per_client * timeout)
    if cpu is not None:
        cpu.start()
    if activity is not None:
        activity.__enter__()
    t0 = time.perf_counter()
    if duration is not None:
        state["deadline"] = t0 + duration
    go.set()
    limit = (duration if duration is not None else (count or 0) * timeout / clients) + timeout
    for t in threads:
        t.join(timeout=max(0.0, t0 + limit - time.perf_counter()))
    stop.set()
    result.wall = time.perf_counter() - t0
    if cpu is not None:
        result.cpu = cpu.stop()
    if activity is not None:
        activity.__exit__()
        result.pg = activity.summary()
    for t in threads:  # a stuck thread is a daemon: the run still ends
        t.join(timeout=1)
    return result
