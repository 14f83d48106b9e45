"""Benchmark fixtures: a dedicated PostgreSQL database, seeded through the
services, and a real gunicorn server on 127.0.0.1 talking to it.

The database is ``<DATABASE_URL's name>_bench`` (``spendplane_bench`` by
default; ``BENCH_DATABASE_NAME`` overrides it). It is created when missing and
migrated with the app's migrations on every run. It is kept between runs, so
the dashboard data set (large) is loaded once; the tenants the other
benchmarks create are named ``bench-run-*`` and deleted at the end of the run
(and at the start, should a previous run have died).

Environment (all optional):
  BENCH_WORKERS / BENCH_THREADS   gunicorn workers and threads (2 / 8)
  BENCH_SETTINGS                  the server's settings module (tests.bench.settings:
                                  config.settings.test with persistent connections)
  BENCH_CONN_MAX_AGE              the server's CONN_MAX_AGE (60; 0 = a connection per request)
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from tests.bench.common import HOST, context, env_int, load_average

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = f"{int(time.time()):x}{os.getpid():x}"
RUN_PREFIX = "bench-run-"

# The catalog slice the benchmarks price with: a handful of real models.
BENCH_MODELS = {
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "tts-1"),
    ("openai", "dall-e-3"),
    ("openai", "whisper-1"),
    ("anthropic", "claude-sonnet-4-5"),
    ("google", "gemini-2.5-pro"),
    ("google", "gemini-2.5-flash"),
}

# -- the dedicated database -------------------------------------------------------------

_db = settings.DATABASES["default"]
if _db["ENGINE"] != "config.postgresql":
    raise pytest.UsageError("The benchmarks need PostgreSQL: set DATABASE_URL=postgres://...")
BASE_NAME = _db["NAME"]
BENCH_NAME = os.environ.get("BENCH_DATABASE_NAME") or f"{BASE_NAME}_bench"
if _db.get("HOST") not in ("127.0.0.1", "localhost", "::1", ""):
    raise pytest.UsageError("The benchmarks only talk to 127.0.0.1: DATABASE_URL points elsewhere.")
# Every connection this process opens from now on goes to the bench database.
_db["NAME"] = BENCH_NAME


def conninfo(dbname: str | None = None) -> dict[str, object]:
    return {
        "host": _db.get("HOST") or HOST,
        "port": int(_db.get("PORT") or 5432),
        "user": _db.get("USER") or "postgres",
        "password": _db.get("PASSWORD") or None,
        "dbname": dbname or BENCH_NAME,
    }


def bench_url() -> str:
    auth = _db.get("USER") or "postgres"
    if _db.get("PASSWORD"):
        auth += f":{_db['PASSWORD']}"
    return f"postgres://{auth}@{_db.get('HOST') or HOST}:{_db.get('PORT') or 5432}/{BENCH_NAME}"


def pg_connect(**kwargs) -> psycopg.Connection:
    return psycopg.connect(**conninfo(), **kwargs)


def _ensure_database() -> None:
    with psycopg.connect(**conninfo("postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_NAME]
        ).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f'CREATE DATABASE "{BENCH_NAME}"')


@dataclass
class Machine:
    nproc: int
    postgres: str
    autovacuum: str

    def line(self, bench: str, **items: object) -> None:
        context(bench, nproc=self.nproc, postgresql=self.postgres, autovacuum=self.autovacuum,
                loadavg=load_average(), **items)  # fmt: skip


@pytest.fixture(scope="session")
def bench_db(django_db_blocker):
    """The migrated bench database, open to this process for the whole session,
    with the catalog slice synced and stale benchmark tenants removed."""
    from django.core.management import call_command
    from django.db import connection

    _ensure_database()
    with django_db_blocker.unblock():
        connection.close()
        call_command("migrate", verbosity=0, interactive=False)
        _sync_catalog()
        _drop_run_tenants(stale_only=True)
        _vacuum()
        yield
        _drop_run_tenants(stale_only=False)
        connection.close()


@pytest.fixture(scope="session")
def machine(bench_db) -> Machine:
    with pg_connect() as conn:
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        autovacuum = conn.execute("SHOW autovacuum").fetchone()[0]
    return Machine(nproc=os.cpu_count() or 0, postgres=version, autovacuum=autovacuum)


# What the benchmarks churn (reservations, holds, counters, rollups, the ledger):
# vacuumed before a run, so a run's figures do not depend on the dead rows earlier
# runs left behind where autovacuum is off or behind (index scans walking them).
CHURNED_TABLES = [
    "quotas_reservation", "quotas_reservationhold", "quotas_budgetperiod", "quotas_budget",
    "profiles_apikey", "profiles_profile", "profiles_organization", "costs_dailyusage",
    "costs_usageevent",
]  # fmt: skip


def _vacuum() -> None:
    with psycopg.connect(**conninfo(), autocommit=True) as conn:
        conn.execute(f"VACUUM (ANALYZE) {', '.join(CHURNED_TABLES)}")


def _sync_catalog() -> None:
    """Sync the catalog slice through the service the first time. Later runs skip
    it while every bench model has a global price: the sync reads the ledger,
    which the dashboard data set makes large."""
    from costs.catalog.source import load_catalog
    from costs.models import Price
    from costs.selectors.catalog import catalog_cache_clear
    from costs.services.catalog import catalog_sync

    priced = set(
        Price.objects.filter(organization__isnull=True)
        .order_by()
        .values_list("model__provider__slug", "model__slug")
        .distinct()
    )
    if priced >= BENCH_MODELS:
        return
    rows = [m for m in load_catalog() if (m.provider, m.slug) in BENCH_MODELS]
    missing = BENCH_MODELS - {(m.provider, m.slug) for m in rows}
    if missing:
        raise RuntimeError(f"catalog lacks {sorted(missing)}")
    catalog_sync(catalog=rows)
    catalog_cache_clear()


def _drop_run_tenants(*, stale_only: bool) -> None:
    from profiles.models import Organization

    qs = Organization.objects.filter(slug__startswith=RUN_PREFIX)
    if stale_only:  # another run may be going on right now: leave recent tenants alone
        qs = qs.exclude(slug__startswith=f"{RUN_PREFIX}{RUN_ID}")
        cutoff = time.time() - 3 * 3600
        qs = qs.filter(created_at__lt=_aware(cutoff))
    else:
        qs = qs.filter(slug__startswith=f"{RUN_PREFIX}{RUN_ID}")
    for org in qs:
        org.delete()


def _aware(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC)


# -- tenants ----------------------------------------------------------------------------


@dataclass
class BenchTenant:
    org: object
    secret: str
    profiles: list[str] = field(default_factory=list)
    budgets: list[object] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


# The budgets of the ingest and request benchmarks: the organization's money, a
# provider's tokens (both block: a reservation holds on two counters) and a warn
# budget on daily requests, all far from their limits.
TYPICAL_BUDGETS = [
    {"name": "Org monthly spend", "metric": "cost", "period": "monthly",
     "limit": Decimal(10**9)},
    {"name": "OpenAI monthly tokens", "metric": "total_tokens", "period": "monthly",
     "provider": "openai", "limit": Decimal(10**11)},
    {"name": "Daily requests", "metric": "requests", "period": "daily",
     "action": "warn", "limit": Decimal(10**11)},
]  # fmt: skip


def make_tenant(
    name: str,
    *,
    profiles: int = 0,
    budgets: list[dict[str, object]] | None = None,
    scopes: str = "ingest,check,read",
    slug: str | None = None,
) -> BenchTenant:
    """An organization with a key, ``profiles`` profiles (``user-0`` ...) and the
    given budgets, all through the services."""
    from profiles.models import Profile
    from profiles.services import api_key_create, organization_create
    from quotas.services import budget_create

    slug = slug or f"{RUN_PREFIX}{RUN_ID}-{name}"
    org = organization_create(slug=slug[:64], name=f"Bench {name}")
    issued = api_key_create(org=org, name="bench", scopes=scopes)
    names = [f"user-{i}" for i in range(profiles)]
    Profile.objects.bulk_create([Profile(organization=org, external_id=n) for n in names])
    made = [budget_create(org=org, **spec) for spec in budgets or []]
    return BenchTenant(org=org, secret=issued.secret, profiles=names, budgets=made)


def big(amount: int = 10**9) -> Decimal:
    return Decimal(amount)


# -- the server -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    port: int
    pid: int
    workers: int
    threads: int
    settings_module: str
    log: Path

    def describe(self) -> str:
        return (
            f"gunicorn(gthread,workers={self.workers},threads={self.threads},"
            f"settings={self.settings_module},conn_max_age={os.environ.get('BENCH_CONN_MAX_AGE', '60')})"
        )

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="session")
def server(bench_db):
    """gunicorn serving config.wsgi on a free 127.0.0.1 port, on the bench database."""
    port = _free_port()
    workers = env_int("BENCH_WORKERS", 2)
    threads = env_int("BENCH_THREADS", 8)
    settings_module = os.environ.get("BENCH_SETTINGS", "tests.bench.settings")
    env = {
        **os.environ,
        "DATABASE_URL": bench_url(),
        "DJANGO_SETTINGS_MODULE": settings_module,
        # Keep the shared Redis test database out of it: queued post-ingest checks
        # (only for budgets in their alert zone) go to an in-process queue.
        "CELERY_BROKER_URL": os.environ.get("BENCH_CELERY_BROKER_URL", "memory://"),
        # The per-key throttle still runs (cache add + incr) but never bites.
        "API_RATE_LIMIT_PER_MINUTE": os.environ.get("BENCH_API_RATE_LIMIT", "1000000000"),
        "PYTHONUNBUFFERED": "1",
    }
    log = Path(tempfile.gettempdir()) / f"spendplane-bench-gunicorn-{RUN_ID}.log"
    cmd = [
        sys.executable, "-m", "gunicorn", "config.wsgi",
        "-w", str(workers), "-k", "gthread", "--threads", str(threads),
        "-b", f"{HOST}:{port}", "--chdir", str(ROOT),
        "--timeout", "120", "--graceful-timeout", "10",
        "--no-control-socket",  # the default socket path is shared by every gunicorn
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(port, proc.pid, workers, threads, settings_module, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({proc.returncode}); see {log}")
            try:
                srv.request("GET", "/healthz")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not answer in 60 s; see {log}") from None
                time.sleep(0.2)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# Benchmarks that scan or load millions of rows run last: they evict the
# caches the write paths' figures depend on (after the 5M-row dashboard
# baseline, the write benchmarks ran up to twice as slow).
# The admin page benchmark reads the same data set, so it goes just before.
LAST = ("test_admin_ledger.py", "test_dashboard.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: LAST.index(item.path.name) + 1 if item.path.name in LAST else 0)


@pytest.fixture(autouse=True)
def _line_start():
    """pytest -q prints a progress dot without a newline: start on a fresh line."""
    print(flush=True)
    yield


def new_key(prefix: str) -> str:
    return f"{prefix}-{RUN_ID}-{uuid.uuid4().hex[:12]}"
