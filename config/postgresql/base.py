"""Django's PostgreSQL backend (psycopg 3), with a cheaper health check, a
cheaper timestamp loader, and generic plans for the prepared statements.

With CONN_HEALTH_CHECKS, Django checks a reused connection at the start of
every request with ``SELECT 1``: a round trip per request, a tenth of a
pre-flight check's work. Under load a connection is reused within moments of
its last request, and one the server has closed since (a restart, a
terminated backend) has something to read on its socket: the server's
goodbye, or end of file. So a connection that sat idle less than
``QUIET_SECONDS`` before this request, in a clean state and with nothing
unread, is used as it is; any other gets ``SELECT 1`` as before. What that skips is a peer gone
without a word in the last moment (a failover moving an address, a lost NAT
entry): the request's first query fails instead of the check, and Django
drops the connection at the end of that request.

Django reads every ``timestamptz`` with a loader that subclasses psycopg's
pure-Python one (the C one cannot be subclassed) to relabel its time zone:
about 6 us a value, and an API request reads dozens (key, organization,
budgets, periods). With the connection's time zone UTC, which is Django's own
choice here, psycopg's C loader gives the same aware datetime, in UTC, for
about 1 us: ``UtcTimestamptzLoader`` hands the values to it.
"""

from __future__ import annotations

import functools
import select
import time
from datetime import UTC, datetime
from typing import cast

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base
from psycopg.abc import AdaptContext
from psycopg.adapt import AdaptersMap, Loader
from psycopg.pq import Format, TransactionStatus

# The only statements prepared are the hot paths' hand-written ones
# (``config.rows.fetch``), and each is planned once per connection with this:
# left to choose, PostgreSQL planned the reservation's and a single event's
# statements anew on every run (their arrays look cheaper to it with their
# sizes known), 0.3-0.4 ms of the server's time a request, about a third of
# what it spent on each. Reads whose best plan depends on their values are
# not prepared (``fetch(..., prepare=False)``): Django's cursors put the values
# in the text, and PostgreSQL plans them for those values. Set once a
# connection is open, not in the startup packet, which PgBouncer refuses
# settings in; behind a transaction-mode pooler it may not follow the
# connection, which costs speed only.
GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"

# Longer idle than this, and the check asks the server as Django's does.
QUIET_SECONDS = 1.0
# Where SELECT 1 could not succeed: a command in progress, a failed
# transaction block, a broken link.
_UNUSABLE = {TransactionStatus.ACTIVE, TransactionStatus.INERROR, TransactionStatus.UNKNOWN}


_TIMESTAMPTZ = psycopg.postgres.types["timestamptz"].oid
# psycopg's own timestamptz loader: its C implementation where it has one
# (psycopg always registers one for timestamptz, so never None).
_FAST_TIMESTAMPTZ = cast("type[Loader]", psycopg.adapters.get_loader(_TIMESTAMPTZ, Format.TEXT))


class UtcTimestamptzLoader(Loader):
    """A ``timestamptz`` as an aware datetime, parsed by psycopg's fastest
    loader: in the connection's time zone (UTC, see ``_with_fast_timestamps``).
    ``timezone`` is what Django's create_cursor compares with its own, to tell
    whether a cursor needs a loader of its own."""

    timezone = UTC

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._load = _FAST_TIMESTAMPTZ(oid, context).load

    def load(self, data: bytes) -> datetime:
        return self._load(data)


@functools.cache
def _with_fast_timestamps(template: AdaptersMap) -> AdaptersMap:
    """Django's adapters (one map per settings, shared by its connections), with
    ``UtcTimestamptzLoader`` for ``timestamptz``."""
    adapters = AdaptersMap(template)
    adapters.register_loader("timestamptz", UtcTimestamptzLoader)
    return adapters


class DatabaseWrapper(base.DatabaseWrapper):
    _last_cycle_at: float | None = None
    _idle_for: float | None = None  # unknown outside Django's request cycle: ask

    def get_connection_params(self) -> dict:
        params = super().get_connection_params()
        # Only where Django's loader would give UTC datetimes from a UTC session.
        if settings.USE_TZ and self.timezone_name == "UTC" and self.timezone == UTC:
            params["context"] = _with_fast_timestamps(params["context"])
        return params

    def _configure_connection(self, connection: psycopg.Connection) -> bool:
        # Django's private hook, absent from django-stubs.
        commit = super()._configure_connection(connection)  # type: ignore[misc]
        if not settings.DB_PREPARE_HOT_QUERIES:
            return commit
        with connection.cursor() as cursor:
            cursor.execute(GENERIC_PLANS)
        return True

    def close_if_unusable_or_obsolete(self) -> None:
        # Django calls this as each request (or Celery task) starts and ends,
        # so at a start, the time since the last call is how long it sat idle.
        super().close_if_unusable_or_obsolete()
        now = time.monotonic()
        if self._last_cycle_at is not None:
            self._idle_for = now - self._last_cycle_at
        self._last_cycle_at = now

    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        if self.connection.info.transaction_status in _UNUSABLE:
            return False
        quiet = self._idle_for is not None and self._idle_for < QUIET_SECONDS
        if quiet and not self._unread():
            return True
        return super().is_usable()

    def _unread(self) -> bool:
        """Has the server sent anything since the last result was read? poll,
        not select: select cannot watch a descriptor past 1023."""
        poller = select.poll()
        try:
            poller.register(self.connection.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True  # let SELECT 1 decide
