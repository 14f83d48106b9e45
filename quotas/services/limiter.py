"""The pre-flight check and the reservation: all holds or none, on PostgreSQL
in one statement."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from config.ids import uuid7
from config.rows import db_value, fetch, pg_array
from profiles.models import Organization
from quotas.models import Budget, Reservation, ReservationHold
from quotas.periods import period_bounds
from quotas.services.base import (
    _TABLE,
    BudgetState,
    CheckResult,
    Dimensions,
    LimiterUnavailable,
)
from quotas.services.counters import (
    _hold,
    reservations_expire,
)
from quotas.services.periods import (
    _lock_timeout,
    _lock_timeout_value,
    amount_for,
    budget_states_now,
    current_states,
)


def quota_check(
    *,
    org: Organization,
    dims: Dimensions,
    amounts: Mapping[str, Decimal | int],
    reserve: bool = False,
    ttl_seconds: int = 300,
    now: datetime | None = None,
    states: list[BudgetState] | None = None,
) -> CheckResult:
    """Would ``amounts`` pass every applicable block budget? With ``reserve``,
    take the hold on all of them atomically or on none. ``states``: the
    budgets matching ``dims`` as ``budget_states_read`` read them at ``now``
    with ``open_missing=False``, if the caller read them with its own reads.

    Raises LimiterUnavailable when the database cannot answer."""
    now = now or timezone.now()
    try:
        if states is None:
            # No period opened by the read (an untouched period is empty).
            states = _matching_states(org, dims, now, open_missing=False)
        if not reserve:
            denied = [s for s in states if _would_exceed(s, amounts)]
            return CheckResult(allowed=not denied, states=states, denied=denied)
        if any(s.period.pk is None for s in states):
            with _limiter_lock_timeout():  # the first reservation of a period opens it
                states = _matching_states(org, dims, now, open_missing=True)
        result = _reserve(org, dims, states, amounts, ttl_seconds, now)
        if not result.allowed and _stale_holds_exist(org, now):
            with _limiter_lock_timeout():
                expired = reservations_expire(org=org, now=now)
            if expired:
                # Stale holds were counted against us; they are gone now, try once more.
                result = _reserve(org, dims, states, amounts, ttl_seconds, now)
        return result
    except DatabaseError as exc:
        raise LimiterUnavailable(str(exc)) from exc


def _stale_holds_exist(org: Organization, now: datetime) -> bool:
    """Does ``org`` have a held reservation past its expiry? One probe of the
    partial index of held reservations by organization and expiry (an index
    scan, which marks the entries of reservations long gone as dead as it
    passes), asked only when a reservation is refused."""
    return bool(
        fetch(
            # The status is a literal, not a parameter: a prepared statement's
            # generic plan can use a partial index only if its condition is in the text.
            f"SELECT 1 FROM {Reservation._meta.db_table} "  # noqa: S608 - our names
            f"WHERE status = '{Reservation.Status.HELD.value}' AND expires_at <= %s "
            "AND organization_id = %s ORDER BY expires_at LIMIT 1",
            [
                connection.ops.adapt_datetimefield_value(now),
                db_value(Reservation, "organization", org.pk),
            ],
        )
    )


def _matching_states(
    org: Organization, dims: Dimensions, at: datetime, *, open_missing: bool
) -> list[BudgetState]:
    """The budgets whose filters match ``dims``, with their current periods;
    ``open_missing`` opens the missing periods of those budgets only."""
    # For one set of dimensions the read's filters are budget_matches exactly,
    # so it opens no period of a budget that does not match.
    return budget_states_now(org, at, open_missing=open_missing, matching=[dims])


@contextmanager
def _limiter_lock_timeout() -> Iterator[None]:
    """Bound every lock wait of the statements inside, on rows and on tables
    alike, by QUOTA_LOCK_TIMEOUT_MS (the limiter answers, or is unavailable).

    Outside a transaction the timeout is set for the session and put back
    after, so each statement inside stays its own transaction, committed by
    the server without another round trip; inside one, it is SET LOCAL in a
    savepoint."""
    if connection.vendor != "postgresql":
        yield
        return
    if connection.in_atomic_block:
        with transaction.atomic():
            _lock_timeout()
            yield
        return
    ((previous, _),) = fetch(
        "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, false)",
        [_lock_timeout_value()],
    )
    try:
        yield
    finally:
        fetch("SELECT set_config('lock_timeout', %s, false)", [previous])


def _would_exceed(state: BudgetState, amounts: Mapping[str, Decimal | int]) -> bool:
    """A block budget refuses a call that would take it past its limit. A call
    that adds nothing to what the budget counts (a chat call and an images
    budget) is not refused by it, even when recorded usage already went past
    the limit: it would not make that any worse."""
    if state.budget.action != Budget.Action.BLOCK:
        return False
    amount = amount_for(state.budget.metric, amounts)
    p = state.period
    return amount > 0 and p.spent + p.reserved + amount > state.budget.limit


class _Denied(Exception):
    def __init__(self, state: BudgetState) -> None:
        self.state = state


def _reserve(
    org: Organization,
    dims: Dimensions,
    states: list[BudgetState],
    amounts: Mapping[str, Decimal | int],
    ttl_seconds: int,
    now: datetime,
) -> CheckResult:
    """Hold ``amounts`` on every block budget of ``states`` (their periods open),
    all or none. The states get the counters as they stand after the attempt."""
    reservation = Reservation(
        id=uuid7(),
        organization=org,
        profile_id=dims.profile_id,
        api_key_id=dims.api_key_id,
        status=Reservation.Status.HELD,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
        estimate={k: str(v) for k, v in amounts.items()},
    )
    if connection.vendor != "postgresql":
        return _reserve_orm(org, reservation, states, amounts, now)
    for _ in range(3):
        holds = _holds(states, amounts)
        held = {s.period.pk for s, _ in holds}
        counters = _reserve_statement(
            reservation,
            holds,
            seen=[s.period.pk for s in states if s.period.pk not in held],
            tz=org.tz,
        )
        if counters is not None:
            # Every budget's counters as the statement found them (a budget
            # deleted since the read has no status to report).
            states = [s for s in states if s.period.pk in counters]
            deniers: list[BudgetState] = []
            for state in states:
                fits, spent, reserved = counters[state.period.pk]
                state.period.spent, state.period.reserved = spent, reserved
                if not fits:
                    deniers.append(state)
            if deniers:  # every budget the call would pass, not only the first
                return CheckResult(allowed=False, states=states, denied=deniers)
            return CheckResult(allowed=True, states=states, reservation=reservation)
        # A budget was deleted, or changed what it counts, or a period was
        # reckoned anew (the organization's time zone changed) since the
        # read: read again, in the zone as it stands.
        org.refresh_from_db(fields=["timezone"])
        org.__dict__.pop("tz", None)
        with _limiter_lock_timeout():
            states = _matching_states(org, dims, now, open_missing=True)
    raise LimiterUnavailable("the organization's budgets kept changing during the reservation")


def _holds(
    states: list[BudgetState], amounts: Mapping[str, Decimal | int]
) -> list[tuple[BudgetState, Decimal]]:
    """What a reservation holds: the call's amount on each block budget it adds
    to, in budget order (nothing on a budget it adds nothing to, which then
    cannot refuse it either: see ``_would_exceed``)."""
    holds = [
        (state, amount_for(state.budget.metric, amounts))
        for state in states
        if state.budget.action == Budget.Action.BLOCK
    ]
    return [(state, amount) for state, amount in holds if amount > 0]


def _reserve_orm(
    org: Organization,
    reservation: Reservation,
    states: list[BudgetState],
    amounts: Mapping[str, Decimal | int],
    now: datetime,
) -> CheckResult:
    """The reservation as ORM statements, for databases without data-modifying
    CTEs (SQLite, the quickstart's): rows first, conditional counter updates
    last, in budget order, all in one transaction."""
    try:
        with transaction.atomic():
            _lock_timeout()
            # The budgets as they stand now, not as read before (a limit
            # lowered meanwhile holds); one deleted meanwhile is gone.
            found = Budget.objects.in_bulk([s.budget.pk for s in states])
            budgets = [found[s.budget.pk] for s in states if s.budget.pk in found]
            fresh = current_states(org, budgets, now)
            holds = _holds(fresh, amounts)
            reservation.save(force_insert=True)
            ReservationHold.objects.bulk_create(
                [
                    ReservationHold(reservation=reservation, period=s.period, amount=a)
                    for s, a in holds
                ]
            )
            for state, amount in holds:
                row = _hold(state.period.pk, amount, state.budget.limit)
                if row is None:
                    raise _Denied(state)
                state.period.spent, state.period.reserved = row
            return CheckResult(allowed=True, states=fresh, reservation=reservation)
    except _Denied as denied:
        # Rolled back: read the counters as they stand; every budget the call
        # would pass refuses it (the first one found, at least).
        fresh = current_states(org, budgets, now, open_missing=False)
        deniers = [
            s for s in fresh if s.budget.action == Budget.Action.BLOCK and _would_exceed(s, amounts)
        ] or [next(s for s in fresh if s.budget.pk == denied.state.budget.pk)]
        return CheckResult(allowed=False, states=fresh, denied=deniers)


_RESERVATION_FIELDS = list(Reservation._meta.concrete_fields)


@functools.cache
def _reserve_sql() -> str:
    qn = connection.ops.quote_name
    fields = _RESERVATION_FIELDS
    return f"""
        WITH cfg AS MATERIALIZED (
            SELECT set_config('lock_timeout', %s, true) AS lock_timeout
        ), req AS (
            SELECT * FROM unnest(%s::bigint[], %s::numeric[], %s::text[], %s::timestamptz[])
                AS r(period_id, amount, metric, period_end)
        ), locked AS (
            SELECT p.id, p.spent, p.reserved, b.{qn("limit")} AS lim
            FROM {_TABLE} p JOIN {Budget._meta.db_table} b ON b.id = p.budget_id
                JOIN req r ON r.period_id = p.id, cfg
            -- The budget and the period as they stand: one whose metric,
            -- action or state changed since the read, or a period that ended
            -- early (reckoned another way now), is missing, and the caller
            -- reads again.
            WHERE b.metric = r.metric AND b.action = '{Budget.Action.BLOCK.value}' AND b.active
                AND p."end" = r.period_end
            ORDER BY p.budget_id, p.start FOR UPDATE OF p
        ), verdict AS (
            SELECT count(*) = %s AND coalesce(bool_and(l.spent + l.reserved + r.amount <= l.lim), true)
                AS ok
            FROM locked l JOIN req r ON r.period_id = l.id
        ), res AS (
            INSERT INTO {Reservation._meta.db_table} ({", ".join(qn(f.column) for f in fields)})
            SELECT {", ".join(f"%s::{f.db_type(connection)}" for f in fields)}
            FROM verdict WHERE ok RETURNING id
        ), hold AS (
            INSERT INTO {ReservationHold._meta.db_table} (reservation_id, period_id, amount)
            SELECT %s::uuid, r.period_id, r.amount FROM req r, verdict WHERE verdict.ok
        ), upd AS (
            UPDATE {_TABLE} p SET reserved = p.reserved + r.amount
            FROM req r, verdict WHERE verdict.ok AND p.id = r.period_id
            RETURNING p.id, p.spent, p.reserved
        )
        SELECT v.ok, l.id, l.spent + l.reserved + r.amount <= l.lim,
               coalesce(u.spent, l.spent), coalesce(u.reserved, l.reserved)
        FROM verdict v, locked l JOIN req r ON r.period_id = l.id LEFT JOIN upd u ON u.id = l.id
        UNION ALL
        -- The other budgets' counters, read (not locked) for their status.
        SELECT NULL, p.id, true, p.spent, p.reserved FROM {_TABLE} p
        WHERE p.id = ANY(%s::bigint[])
    """  # noqa: S608 - table and column names are our own


def _reserve_statement(
    reservation: Reservation,
    holds: list[tuple[BudgetState, Decimal]],
    *,
    seen: list[int],
    tz: ZoneInfo,
) -> dict[int, tuple[bool, Decimal, Decimal]] | None:
    """PostgreSQL: the whole reservation in one statement. It locks the periods in
    (budget, start) order, the one lock order of every counter writer; decides
    whether every hold fits, against each budget's limit as it stands when the
    statement runs (not as read before: a limit lowered meanwhile holds); and
    only if all do, inserts the reservation and its
    holds and adds them to ``reserved``. Returns each period's (fits, spent,
    reserved) after it, the ``seen`` ones' too (read, not locked: budgets
    that hold nothing), or None when a held period row is missing or its
    budget changed what it counts, its action or its state since it was read.

    Outside a transaction it is its own transaction: PostgreSQL commits it
    without another round trip, so a hot period's row lock is held for the
    statement and its WAL flush only, never while this process waits for its
    turn to run (a thread of a busy web worker). Its row-lock waits are
    bounded by QUOTA_LOCK_TIMEOUT_MS, set inside it (``set_config(..., true)``
    lasts until its transaction ends) before the first row lock is asked for.
    The table locks it takes before it runs are not: like every read of these
    tables, it waits for a migration's DDL to finish."""
    params: list[object] = [
        _lock_timeout_value(),
        # Arrays as PostgreSQL text literals: cheaper than the driver working
        # out each list's element type.
        pg_array([s.period.pk for s, _ in holds]),
        pg_array([a for _, a in holds]),
        pg_array([s.budget.metric for s, _ in holds]),
        # The end each period has by its start (a row reckoned another way
        # since the read ended early, at the change).
        pg_array([period_bounds(s.budget.period, tz, s.period.start)[1] for s, _ in holds]),
        len(holds),
    ]
    params += [
        Jsonb(getattr(reservation, f.attname))
        if isinstance(f, models.JSONField)
        else getattr(reservation, f.attname)
        for f in _RESERVATION_FIELDS
    ]
    params += [reservation.pk, pg_array(seen)]
    sql = _reserve_sql()
    # Inside a caller's transaction, a savepoint: a refused lock must not
    # abort the caller's work.
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        rows = fetch(sql, params)
    if sum(1 for row in rows if row[0] is not None) != len(holds):
        return None
    return {pid: (fits, spent, reserved) for _, pid, fits, spent, reserved in rows}
