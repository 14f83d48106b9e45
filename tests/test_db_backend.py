"""The PostgreSQL backend's health check: no round trip for a healthy
connection, and a connection the server has closed is found out and replaced."""

from __future__ import annotations

import os
import resource
import time
from datetime import UTC, datetime

import pytest
from django.db import connection

from config.postgresql.base import QUIET_SECONDS, DatabaseWrapper

pytestmark = pytest.mark.django_db


def _connect() -> DatabaseWrapper:
    """Another connection to the test database, of the project's backend,
    persistent (CONN_MAX_AGE) as the web processes run it."""
    wrapper = DatabaseWrapper({**connection.settings_dict, "CONN_MAX_AGE": 60}, "default")
    wrapper.ensure_connection()
    return wrapper


@pytest.fixture
def other():
    wrapper = _connect()
    yield wrapper
    wrapper.close()


def _last_query(pid: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0]


def test_the_backend_is_the_projects(other):
    assert type(other).__module__ == "config.postgresql.base"
    assert other.vendor == "postgresql"


def _between_requests(wrapper, idle: float = 0.0) -> None:
    """What Django does as a request ends and, ``idle`` seconds later, the next starts."""
    wrapper.close_if_unusable_or_obsolete()
    if idle:
        wrapper._last_cycle_at -= idle
    wrapper.close_if_unusable_or_obsolete()


def test_a_busy_healthy_connection_is_usable_without_a_round_trip(other):
    with other.connection.cursor() as cursor:
        cursor.execute("SELECT 'health-marker'")
    pid = other.connection.info.backend_pid
    _between_requests(other)

    assert other.is_usable()
    # Had it sent SELECT 1, that would be the backend's last statement now.
    assert _last_query(pid) == "SELECT 'health-marker'"


def test_a_connection_idle_for_a_while_is_asked_as_django_asks(other):
    with other.connection.cursor() as cursor:
        cursor.execute("SELECT 'health-marker'")
    pid = other.connection.info.backend_pid
    _between_requests(other, idle=QUIET_SECONDS + 1)

    assert other.is_usable()
    assert _last_query(pid) == "SELECT 1"


def test_outside_a_request_cycle_the_check_asks_the_server(other):
    with other.connection.cursor() as cursor:
        cursor.execute("SELECT 'health-marker'")

    assert other.is_usable()
    assert _last_query(other.connection.info.backend_pid) == "SELECT 1"


def test_the_check_works_on_a_descriptor_past_1023(other):
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"needs 1,200 open files, the limit is {soft}")
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        high = _connect()
        assert high.connection.fileno() > 1023
        with high.connection.cursor() as cursor:
            cursor.execute("SELECT 'high-marker'")
        _between_requests(high)
        assert high.is_usable()
        assert _last_query(high.connection.info.backend_pid) == "SELECT 'high-marker'"
        high.close()
    finally:
        for fd in spare:
            os.close(fd)


def test_a_connection_in_a_failed_transaction_is_not_usable(other):
    # As SELECT 1 would find: Django's TestCase, for one, asks before checking constraints.
    other.connection.autocommit = False
    with other.connection.cursor() as cursor, pytest.raises(Exception, match="division by zero"):
        cursor.execute("SELECT 1 / 0")

    assert not other.is_usable()
    other.connection.rollback()
    assert other.is_usable()


def test_a_connection_the_server_closed_is_not_usable_and_is_replaced(other):
    pid = other.connection.info.backend_pid
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0] is True
    deadline = time.monotonic() + 5
    while other.is_usable() and time.monotonic() < deadline:
        time.sleep(0.02)

    assert not other.is_usable()
    # What Django does at the start of a request: check, close, reconnect on use.
    other.health_check_enabled = True
    _between_requests(other)  # also resets health_check_done, as at a request start
    other.close_if_health_check_failed()
    assert other.connection is None
    with other.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert other.connection.info.backend_pid != pid


# -- timestamps ------------------------------------------------------------------------

TIMESTAMPS = [
    "2026-11-22 12:34:56.789012+00",
    "1999-12-31 23:59:59+05:30",
    "2024-02-29 00:00:00-08",
    "1970-01-01 00:00:00+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "2026-03-29 01:30:00 Europe/Paris",
]


def _load_all(cursor) -> list:
    sql = "SELECT " + ", ".join(["%s::timestamptz"] * len(TIMESTAMPS))
    cursor.execute(sql, TIMESTAMPS)
    return list(cursor.fetchone())


def test_timestamps_load_as_djangos_loader_loads_them(other):
    from django.db.backends.postgresql.psycopg_any import register_tzloader
    from psycopg.pq import Format

    from config.postgresql.base import _TIMESTAMPTZ, UtcTimestamptzLoader

    with other.cursor() as cursor:
        # Every cursor of the connection uses the fast loader: Django saw no
        # need to register one of its own.
        assert cursor.cursor.adapters.get_loader(_TIMESTAMPTZ, Format.TEXT) is UtcTimestamptzLoader
        fast = _load_all(cursor)
    with other.cursor() as cursor:
        register_tzloader(UTC, cursor.cursor)  # Django's own, for this cursor
        assert cursor.cursor.adapters.get_loader(_TIMESTAMPTZ, Format.TEXT) is not (
            UtcTimestamptzLoader
        )
        django = _load_all(cursor)

    assert fast == django
    assert [d.tzinfo for d in fast] == [UTC] * len(TIMESTAMPS)
    assert fast[0] == datetime(2026, 11, 22, 12, 34, 56, 789012, tzinfo=UTC)
    assert fast[1] == datetime(1999, 12, 31, 18, 29, 59, tzinfo=UTC)
    assert fast[6] == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET


def test_a_timestamp_past_pythons_range_fails_as_with_djangos_loader(other):
    from django.db import DataError

    with other.cursor() as cursor, pytest.raises(DataError):
        cursor.execute("SELECT 'infinity'::timestamptz")
        cursor.fetchone()


def _reserve_and_record(org, key: str) -> None:
    """The two hot statements once each: a reservation, then a single event,
    both through the services, both answered."""
    from costs.services import usage_record
    from tests.quotas.helpers import priced_call, priced_hold

    held = priced_hold(org, "0.01")
    assert held.allowed and held.reservation is not None
    (recorded,) = usage_record(org=org, events=[priced_call(key)])
    assert recorded.status == 201


def test_the_hot_statements_are_planned_once_not_on_every_run(tenant_a):
    """Reservations and single events run prepared statements; PostgreSQL,
    left to choose, planned them anew on every run. The backend asks for
    generic plans: after ten runs, none was planned for its parameters."""
    from decimal import Decimal

    from quotas.services import budget_create

    budget_create(org=tenant_a.org, name="Cap", limit=Decimal(1000))
    for i in range(10):
        _reserve_and_record(tenant_a.org, f"k{i}")
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "force_generic_plan"
        cursor.execute(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement ILIKE %s OR statement ILIKE %s",
            ["%INSERT INTO quotas_reservation %", "%INSERT INTO costs_usageevent %"],
        )
        plans = cursor.fetchall()
    assert len(plans) >= 2, plans
    for statement, generic, custom in plans:
        assert custom == 0, (statement[:80], generic, custom)
        assert generic >= 10, (statement[:80], generic, custom)


def test_reads_whose_plan_depends_on_their_values_are_not_prepared(tenant_a, api_a):
    """An organization's budget list for the setup memo (``ORDER BY id LIMIT``)
    and the dashboard's budget overview are planned for the organization at
    hand each time: on a generic plan, blind to the tenant's share of the
    budgets, the first walked the whole primary key for a small tenant beside
    a large one. They still answer: the check and the dashboard show the
    budget."""
    from decimal import Decimal

    from quotas.services import budget_create

    budget_create(org=tenant_a.org, name="Cap", limit=Decimal(1000))
    check = api_a.post(
        "/api/v1/quota/check",
        {"provider": "acme-ai", "model": "custom-x", "estimate": {"cost": "0.01"}, "reserve": True},
        format="json",
    )
    assert check.status_code == 200, check.content
    assert [b["name"] for b in check.json()["budgets"]] == ["Cap"]
    dashboard = api_a.get("/api/v1/dashboard")
    assert dashboard.status_code == 200
    assert "Cap" in dashboard.content.decode()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert prepared, "the hot statements are prepared"
    assert not [s for s in prepared if "ORDER BY b.id" in s and "LIMIT" in s], prepared


@pytest.mark.django_db(transaction=True)
def test_behind_a_pooler_nothing_is_prepared_and_plans_are_left_to_the_server(tenant_a, settings):
    """DB_PREPARE_HOT_QUERIES off (a transaction-mode pooler that cannot keep
    prepared statements): the hot statements still run, none is prepared,
    and the connection's plan cache mode is the server's own."""
    from decimal import Decimal

    from quotas.services import budget_create

    settings.DB_PREPARE_HOT_QUERIES = False
    connection.close()  # configured anew, under the setting
    budget_create(org=tenant_a.org, name="Cap", limit=Decimal(10))
    _reserve_and_record(tenant_a.org, "k1")
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "auto"
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 0
