"""Soak / chaos fixtures: a real gunicorn server on the test database, and the
means to hurt it (SIGKILL a worker, restart PostgreSQL).

The soak tests are long and restart the PostgreSQL cluster, so they only run
when asked for: ``pytest tests/soak -m soak`` (``make soak``) or ``SOAK=1``.
A plain ``pytest`` run collects them and reports them skipped.

Environment (all optional; see tests/soak/test_chaos.py for the load knobs):
  SOAK_WORKERS       gunicorn sync workers (3)
  SOAK_CONN_MAX_AGE  serve with persistent connections (tests/soak/settings.py) instead
                     of config.settings.test's CONN_MAX_AGE=0; SOAK_CONN_HEALTH_CHECKS=1
                     adds Django's connection health checks
  SOAK_PG_CHAOS      restart (default): restart the local cluster with pg_ctlcluster;
                     terminate: pg_terminate_backend() every connection to the test
                     database instead (no root needed, other databases untouched);
                     none: no database chaos
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: long chaos/soak tests against a real server (make soak)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr", "") or "") or os.environ.get("SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak test: run with `-m soak` (make soak) or SOAK=1")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


# -- PostgreSQL ---------------------------------------------------------------------------


def _sudo() -> list[str]:
    if os.geteuid() == 0:
        return []
    return ["sudo", "-n"] if _which("sudo") else []


def _which(cmd: str) -> bool:
    return any(
        os.access(os.path.join(d, cmd), os.X_OK) for d in os.environ.get("PATH", "").split(":")
    )


def pg_version() -> str | None:
    try:
        versions = sorted(
            os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".")]
        )
    except (OSError, ValueError):
        return None
    return versions[-1] if versions else None


@dataclass
class Postgres:
    """The PostgreSQL the test database lives on, and how to hurt it."""

    settings: dict
    mode: str  # restart | terminate | none
    version: str | None = None
    log: list[str] = field(default_factory=list)

    @property
    def dbname(self) -> str:
        return self.settings["NAME"]

    def url(self) -> str:
        s = self.settings
        auth = quote(s.get("USER") or "postgres", safe="")
        if s.get("PASSWORD"):
            auth += ":" + quote(s["PASSWORD"], safe="")
        host = s.get("HOST") or HOST
        return f"postgres://{auth}@{host}:{s.get('PORT') or 5432}/{quote(self.dbname, safe='')}"

    def connect(self, dbname: str | None = None, timeout: float = 3):
        import psycopg

        s = self.settings
        return psycopg.connect(
            host=s.get("HOST") or HOST,
            port=int(s.get("PORT") or 5432),
            user=s.get("USER") or "postgres",
            password=s.get("PASSWORD") or None,
            dbname=dbname or self.dbname,
            connect_timeout=max(1, int(timeout)),
            autocommit=True,
        )

    def answers(self) -> bool:
        try:
            with self.connect(timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - down, starting up, refusing: all "no"
            return False

    def wait_up(self, seconds: float = 60) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.answers():
                return True
            time.sleep(0.2)
        return False

    def _ctl(self, action: str, *extra: str) -> subprocess.CompletedProcess:
        cmd = [*_sudo(), "pg_ctlcluster", "--skip-systemctl-redirect", self.version or "",
               "main", action, *extra]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # noqa: S603
        self.log.append(f"{' '.join(cmd)} -> {done.returncode} {done.stderr.strip()[:300]}")
        return done

    def hurt(self) -> str:
        """Kill every connection to the test database (restart the cluster, or
        terminate the backends); returns what was done. Waits until it answers."""
        if self.mode == "restart":
            done = self._ctl("restart", "-m", "fast")
            if done.returncode != 0:
                self._ctl("start")
            if not self.wait_up(90):
                self.ensure_running()
                raise RuntimeError(f"PostgreSQL did not come back: {self.log}")
            return "restart"
        if self.mode == "terminate":
            with self.connect("postgres") as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [self.dbname],
                )
            return "terminate"
        return "none"

    def ensure_running(self) -> None:
        """Leave PostgreSQL running, whatever happened."""
        if self.answers():
            return
        if self.version:
            self._ctl("start")
        if not self.wait_up(90):
            raise RuntimeError(f"PostgreSQL is not running after the soak test: {self.log}")


def _pg_mode(settings: dict) -> str:
    wanted = os.environ.get("SOAK_PG_CHAOS", "restart").strip() or "restart"
    if wanted != "restart":
        return wanted
    local = (settings.get("HOST") or "") in LOCAL_HOSTS
    can = local and pg_version() and _which("pg_ctlcluster") and (os.geteuid() == 0 or _sudo())
    if not can:
        print(
            "soak: cannot restart PostgreSQL here (not a local Debian cluster, or not root);"
            " terminating the test database's connections instead",
            flush=True,
        )
        return "terminate"
    return "restart"


@pytest.fixture
def postgres(transactional_db) -> Postgres:
    """Set up after (so torn down before) pytest-django's database fixture: the
    cluster is running again before the test database is flushed and dropped."""
    from django.db import connection, connections

    settings = dict(connection.settings_dict)  # NAME is the test database here
    pg = Postgres(settings=settings, mode=_pg_mode(settings), version=pg_version())
    try:
        yield pg
    finally:
        pg.ensure_running()
        connections.close_all()  # the old socket may be dead after a restart


# -- gunicorn -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Child pids of ``pid`` (gunicorn's workers of its master), from /proc."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids.extend(int(p) for p in (task / "children").read_text().split())
    if kids:
        return sorted(set(kids))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(  # noqa: S603
            ["pgrep", "-P", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,  # noqa: S607
        ).stdout
        kids = [int(p) for p in out.split()]
    return sorted(set(kids))


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path
    workers: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return _children(self.pid)

    def kill_worker(self, rng) -> int | None:  # noqa: ANN001
        pids = self.worker_pids()
        if not pids:
            return None
        victim = rng.choice(pids)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return victim

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the master and every worker (the server has its own process group)."""
        if self.proc.poll() is None:
            workers = self.worker_pids()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=10)
            for pid in workers:  # orphans of a master that had to be killed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own group, by its id

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_counts(self) -> dict[str, int]:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return {}
        return {
            "tracebacks": text.count("Traceback (most recent call last)"),
            "worker_timeouts": text.count("WORKER TIMEOUT"),
            "booted": text.count("Booting worker"),
        }


@pytest.fixture
def soak_server(postgres: Postgres):
    """``gunicorn config.wsgi -w 3`` on a free port, serving the test database."""
    port = _free_port()
    workers = env_int("SOAK_WORKERS", 3)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": (
            "tests.soak.settings" if os.environ.get("SOAK_CONN_MAX_AGE") else "config.settings.test"
        ),
        "DATABASE_URL": postgres.url(),
        "API_RATE_LIMIT_PER_MINUTE": "0",
        # No alert is expected (the budgets are huge); keep the shared Redis
        # test database out of it all the same.
        "CELERY_BROKER_URL": os.environ.get("SOAK_CELERY_BROKER_URL", "memory://"),
        "PYTHONUNBUFFERED": "1",
    }
    log = Path(tempfile.gettempdir()) / f"spendplane-soak-gunicorn-{os.getpid()}-{port}.log"
    cmd = [
        sys.executable, "-m", "gunicorn", "config.wsgi",
        "-w", str(workers), "-b", f"{HOST}:{port}", "--timeout", "30",
        "--graceful-timeout", "5", "--chdir", str(ROOT),
        "--no-control-socket",  # the default path is per user: another gunicorn may own it
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(proc, port, log, workers)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({proc.returncode}):\n{server.log_tail()}")
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=5)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"gunicorn did not answer in 60 s:\n{server.log_tail()}"
                    ) from None
                time.sleep(0.2)
        yield server
    finally:
        server.stop()
