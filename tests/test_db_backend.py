"""The PostgreSQL backend's health check: no round trip for a healthy
connection, and a connection the server has closed is found out and replaced."""

from __future__ import annotations

import time

import pytest
from django.db import connection, connections

pytestmark = pytest.mark.django_db


@pytest.fixture
def other():
    """A second connection to the test database, of the project's backend."""
    wrapper = connections.create_connection("default")
    wrapper.ensure_connection()
    yield wrapper
    wrapper.close()


def _last_query(pid: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0]


def test_the_backend_is_the_projects(other):
    assert type(other).__module__ == "config.postgresql.base"
    assert other.vendor == "postgresql"


def test_a_healthy_idle_connection_is_usable_without_a_round_trip(other):
    with other.connection.cursor() as cursor:
        cursor.execute("SELECT 'health-marker'")
    pid = other.connection.info.backend_pid

    assert other.is_usable()
    # Had it sent SELECT 1, that would be the backend's last statement now.
    assert _last_query(pid) == "SELECT 'health-marker'"


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
    other.health_check_done = False
    other.close_if_health_check_failed()
    assert other.connection is None
    with other.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert other.connection.info.backend_pid != pid
