"""The benchmarks' closed-loop HTTP load generator: keep-alive connections
driven by one thread with non-blocking sockets, so that the client, which
shares the machine with the server and PostgreSQL, takes little of it."""

from __future__ import annotations

import contextlib
import selectors
import socket
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.bench.common import HOST, CpuMeter, PgActivity

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


class _Conn:
    """One client's keep-alive connection, driven by the load loop: a request
    written, then its answer read, without blocking."""

    __slots__ = ("client", "sock", "out", "buf", "spec", "sent_at", "deadline", "retried",
                 "need", "status", "head_end", "warm")  # fmt: skip

    def __init__(self, client: int) -> None:
        self.client = client
        self.sock: socket.socket | None = None
        self.warm = 0
        self.retried = False
        self.spec: RequestSpec | None = None

    def connect(self, port: int, timeout: float) -> None:
        self.close()
        sock = socket.create_connection((HOST, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def start(self, spec: RequestSpec, payload: bytes, now: float, timeout: float) -> None:
        self.spec = spec
        self.out = memoryview(payload)
        self.buf = bytearray()
        self.sent_at = now
        self.deadline = now + timeout
        self.need = -1  # bytes of the whole answer, once its head is read
        self.status = 0
        self.head_end = -1


def _encode(spec: RequestSpec, cache: dict[int, tuple[RequestSpec, bytes]]) -> bytes:
    """The request's bytes, encoded once per spec object (scenarios hand out
    the same tuple again and again)."""
    hit = cache.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    method, path, body, headers = spec
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    if len(cache) >= 10_000:  # scenarios that make a new request each time
        cache.clear()
    cache[id(spec)] = (spec, payload)
    return payload


def _parse_head(conn: _Conn) -> bool:
    """Reads the status and framing of an answer whose head has arrived.
    False when the answer cannot be framed (no length: not what this server sends)."""
    end = conn.buf.find(b"\r\n\r\n")
    if end < 0:
        return True
    head = bytes(conn.buf[:end]).decode("latin-1").split("\r\n")
    conn.status = int(head[0].split(" ", 2)[1])
    length = None
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
            return False
    conn.head_end = end + 4
    conn.need = conn.head_end + (length or 0)
    return length is not None or conn.spec[0] == "HEAD"  # type: ignore[index]


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
    """Closed loop: ``clients`` keep-alive connections, each sending
    ``make_request(client, seq)`` as soon as its previous answer has arrived,
    until ``duration`` seconds have passed or ``count`` requests were sent in
    all (whichever comes first; at least one of the two must be given).
    ``warmup_per_client`` requests per connection go first and are not
    counted. One thread drives every connection with non-blocking sockets and
    each request's bytes are encoded once, so the load generator takes a
    small share of the machine it shares with the server (a thread per
    client with ``http.client`` took about five times the CPU per request).
    Bounded: a request that takes longer than ``timeout`` is a failure, and
    the run ends after ``duration`` (or ``count`` x ``timeout`` / ``clients``)
    plus ``timeout`` whatever happens."""
    if duration is None and count is None:
        raise ValueError("give duration, count, or both")
    result = LoadResult()
    sel = selectors.DefaultSelector()
    encoded: dict[int, tuple[RequestSpec, bytes]] = {}
    conns = [_Conn(c) for c in range(clients)]
    state = {"seq": 0, "measuring": False, "deadline": float("inf"), "active": clients}
    broken: list[_Conn] = []  # failed to connect or send: handled by the loop

    def send(conn: _Conn, spec: RequestSpec) -> None:
        """Writes what the socket takes at once (all of a small request) and
        leaves the rest to the loop: a connection stays registered for reading.
        A connection that cannot be made or written to is handed to the loop
        as a failure (``broken``), not raised."""
        try:
            if conn.sock is None:
                conn.connect(port, min(timeout, 10.0))
                sel.register(conn.sock, selectors.EVENT_READ, conn)
            conn.start(spec, _encode(spec, encoded), time.perf_counter(), timeout)
            with contextlib.suppress(BlockingIOError):
                conn.out = conn.out[conn.sock.send(conn.out) :]  # type: ignore[union-attr]
            if conn.out:
                sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        except OSError:
            conn.spec, conn.buf = spec, bytearray()
            broken.append(conn)

    def drop(conn: _Conn) -> None:
        if conn.sock is not None:
            sel.unregister(conn.sock)
            conn.close()

    def next_request(conn: _Conn) -> None:
        """The connection's next request, or its end (warm-up: its next
        warm-up request, or a wait for the start)."""
        conn.retried = False
        if not state["measuring"]:
            if conn.warm < warmup_per_client:
                conn.warm += 1
                send(conn, make_request(conn.client, -conn.warm))
            else:
                conn.spec = None  # warmed up: waits for the start
            return
        n = state["seq"]
        if (count is not None and n >= count) or time.perf_counter() >= state["deadline"]:
            drop(conn)
            conn.spec = None
            state["active"] -= 1
            return
        state["seq"] = n + 1
        send(conn, make_request(conn.client, n))

    def failed(conn: _Conn) -> None:
        """The connection broke or timed out. A request with no answer yet is
        sent once more on a new connection (the server may close an idle
        keep-alive connection); a second failure counts."""
        spec = conn.spec
        drop(conn)
        if spec is None:
            return  # an idle connection closed: the next request reconnects
        if not conn.retried and not conn.buf:
            conn.retried = True
            send(conn, spec)
            return
        if state["measuring"]:
            result.failures += 1
        next_request(conn)

    def answered(conn: _Conn) -> None:
        if state["measuring"]:
            result.latencies.append(time.perf_counter() - conn.sent_at)
            result.statuses[conn.status] += 1
            if on_response is not None:
                on_response(conn.client, conn.status, bytes(conn.buf[conn.head_end : conn.need]))
        next_request(conn)

    def pump(limit: float, until_idle: bool) -> None:
        while state["active"] > 0:
            now = time.perf_counter()
            if now >= limit or (until_idle and all(c.spec is None for c in conns)):
                return
            for key, mask in sel.select(timeout=min(0.1, limit - now)):
                conn: _Conn = key.data
                try:
                    if mask & selectors.EVENT_WRITE and conn.out:
                        conn.out = conn.out[conn.sock.send(conn.out) :]  # type: ignore[union-attr]
                        if not conn.out:
                            sel.modify(conn.sock, selectors.EVENT_READ, conn)
                    if not mask & selectors.EVENT_READ:
                        continue
                    chunk = conn.sock.recv(262144)  # type: ignore[union-attr]
                    if not chunk:
                        raise ConnectionResetError("closed by the server")
                    if conn.spec is None:
                        continue  # idle: nothing is expected
                    conn.buf += chunk
                    if conn.need < 0 and not _parse_head(conn):
                        raise ConnectionError("an answer without Content-Length")
                    if 0 <= conn.need <= len(conn.buf):
                        answered(conn)
                except OSError:
                    failed(conn)
            now = time.perf_counter()
            for conn in conns:
                if conn.spec is not None and conn not in broken and now > conn.deadline:
                    conn.retried = True  # a request that timed out is not sent again
                    failed(conn)
            # Once a turn (the select above paces a server that refuses them all).
            again, broken[:] = broken[:], []
            for conn in again:
                failed(conn)

    if warmup_per_client:
        for conn in conns:
            next_request(conn)
        pump(time.perf_counter() + timeout * warmup_per_client, until_idle=True)
    if cpu is not None:
        cpu.start()
    if activity is not None:
        activity.__enter__()
    t0 = time.perf_counter()
    state["measuring"] = True
    if duration is not None:
        state["deadline"] = t0 + duration
    for conn in conns:
        next_request(conn)
    limit = (duration if duration is not None else (count or 0) * timeout / clients) + timeout
    pump(t0 + limit, until_idle=False)
    result.wall = time.perf_counter() - t0
    if cpu is not None:
        result.cpu = cpu.stop()
    if activity is not None:
        activity.__exit__()
        result.pg = activity.summary()
    for conn in conns:
        drop(conn)
    sel.close()
    return result
