"""The PostgreSQL backend's health check: no round trip for a healthy
connection, and a connection the server has closed is found out and replaced."""

from __future__ import annotations

import os
import resource
import time

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
