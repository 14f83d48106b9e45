"""The limiter engine's writes: check, reserve, charge, settle, release, expire.

It counts amounts along dimensions it is handed and knows nothing of prices:
the ledger tells it what was spent (``budget_charge``) and, for a period opened
for the first time, what had been spent before (``quotas.spend``).

Concurrency: every counter change is a conditional or additive UPDATE; rows of
``BudgetPeriod`` are always locked in (budget id, period start) order and a
reservation's own row before its periods, so concurrent reservations, charges
and releases never deadlock, and a reservation never pushes spent + reserved
of a block budget past its limit.

Speed: a pre-flight check reads its budgets and their current periods with one
hand-written query; on PostgreSQL a reservation is one statement (lock the
periods in order, decide, insert the reservation and its holds, add to
``reserved``), so a hot budget's row lock is held for that statement and the
commit only.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from psycopg.types.json import Jsonb

from config.ids import uuid7
from config.rows import Read, RowReader, db_value, fetch, in_list, pg_array, read
from profiles.models import Organization, Profile
from profiles.services import organization_locked, organizations_lock
from profiles.setup import memo_part
from quotas.models import Budget, BudgetPeriod, Reservation, ReservationHold
from quotas.periods import period_bounds
from quotas.spend import spend_between, spend_between_many

logger = logging.getLogger(__name__)

_TABLE = BudgetPeriod._meta.db_table
_BUDGETS = RowReader(Budget)
_PERIODS = RowReader(BudgetPeriod)
COUNT_METRICS = {m for m in Budget.Metric.values if m != "cost"}
# The period kinds, in the order the current-period read takes their starts
# (``Budget.Period.values`` builds a new list on every use).
_PERIOD_KINDS = tuple(Budget.Period.values)
# (budget id, period start, period end): the key periods are locked in order of.
PeriodKey = tuple[str, datetime, datetime]


@dataclass(frozen=True)
class Dimensions:
    """What a budget's scope filters match on."""

    profile_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    provider: str
    model: str
    operation: str


@dataclass(frozen=True)
class Charge:
    """Actual usage of one event: amounts by budget metric (``cost``, ``requests``,
    ``input_tokens``, ...), at ``occurred_at``, possibly settling a reservation."""

    dims: Dimensions
    occurred_at: datetime
    amounts: Mapping[str, Decimal | int]
    reservation_id: uuid.UUID | None = None


class LimiterUnavailable(Exception):
    """The limiter could not answer (database error, lock timeout)."""


class ReservationNotFound(Exception):
    pass


@dataclass
class BudgetState:
    budget: Budget
    period: BudgetPeriod


@dataclass
class CheckResult:
    allowed: bool
    states: list[BudgetState]
    denied: list[BudgetState] = field(default_factory=list)
    reservation: Reservation | None = None

    @property
    def money_denied(self) -> bool:
        return any(s.budget.is_money for s in self.denied)


# -- matching and periods --------------------------------------------------------------


def budget_matches(budget: Budget, dims: Dimensions) -> bool:
    return (
        (budget.profile_id is None or budget.profile_id == dims.profile_id)
        and (budget.api_key_id is None or budget.api_key_id == dims.api_key_id)
        and (not budget.provider or budget.provider == dims.provider)
        and (not budget.model or budget.model == dims.model)
        and (not budget.operation or budget.operation == dims.operation)
    )


def active_budgets(org: Organization) -> list[Budget]:
    """The organization's active budgets in id order (hand-written: every
    ingestion reads them)."""
    return read(active_budgets_read(org))


def active_budgets_read(org: Organization, *, limit: int | None = None) -> Read[list[Budget]]:
    """``active_budgets`` as a ``Read``, to send with a request's other reads;
    the first ``limit`` of them, if given."""

    def load(rows: list[tuple]) -> list[Budget]:
        budgets = [_BUDGETS.read(row) for row in rows]
        for budget in budgets:
            budget.organization = org
        return budgets

    params: list[object] = [db_value(Budget, "organization", org.pk)]
    if limit is not None:
        params.append(limit)
    # Not prepared: a generic plan, blind to how many budgets this
    # organization holds, walked the whole primary key in id order for a
    # small tenant beside a large one (11-18 ms against 0.006).
    return Read(
        f"SELECT {_BUDGETS.columns('b')} FROM {Budget._meta.db_table} b "  # noqa: S608
        "WHERE b.organization_id = %s AND b.active ORDER BY b.id"
        + (" LIMIT %s" if limit is not None else ""),
        params,
        _BUDGETS.width,
        load,
        prepare=False,
    )


def budget_states_known(
    org: Organization, at: datetime, dims: Iterable[Dimensions], memo: dict[str, Any]
) -> list[BudgetState] | None:
    """The active budgets matching one of ``dims`` with their periods at ``at``,
    as ``budget_states_read`` reads them, from ``org``'s setup memo
    (``profiles.setup``) instead: its budgets (read once per version) and the
    ids of their period rows (learned from reads, ``budget_states_learn``).
    The counters are not known (``spent`` and ``reserved`` are None): the
    caller's own statement reads them. None when a period row is not
    remembered (it may not be open yet)."""
    budgets = memo.get("budgets")
    if budgets is None:
        budgets = budgets_learn(memo, read(memo_budgets_read(org)))
    if budgets is False:  # too many to keep: read as before
        return None
    periods = memo.get("periods", {})
    bounds: dict[str, tuple[datetime, datetime]] = {}
    states: dict[object, BudgetState] = {}
    for d in dims:
        candidates = budgets.get(None, [])
        if d.profile_id is not None:
            candidates = [*candidates, *budgets.get(d.profile_id, ())]
        for budget in candidates:
            if budget.pk in states or not budget_matches(budget, d):
                continue
            span = bounds.get(budget.period)
            if span is None:
                span = bounds[budget.period] = period_bounds(budget.period, org.tz, at)
            found = periods.get((budget.pk, span[0]))
            if found is None:
                return None
            period = BudgetPeriod(
                pk=found[0],
                budget_id=budget.pk,
                start=span[0],
                end=found[1],
                spent=None,
                reserved=None,
            )
            period.budget = budget
            states[budget.pk] = BudgetState(budget, period)
    return sorted(states.values(), key=lambda s: str(s.budget.pk))


# An organization with more active budgets than this (a budget per end user,
# say) keeps none in the setup memo: each process would hold them all, and
# read them all again after every change to one.
MEMO_BUDGETS_MAX = 10_000


def memo_budgets_read(org: Organization) -> Read[list[Budget]]:
    """What ``budgets_learn`` takes: the active budgets, one more than
    ``MEMO_BUDGETS_MAX`` at most."""
    return active_budgets_read(org, limit=MEMO_BUDGETS_MAX + 1)


def budgets_learn(
    memo: dict[str, Any], budgets: Iterable[Budget]
) -> dict[object | None, list[Budget]] | Literal[False]:
    """Remember the organization's active ``budgets`` (``memo_budgets_read``),
    read at the memo's version (or after it), by the profile they are for
    (None: any); or, past ``MEMO_BUDGETS_MAX``, that there are too many."""
    budgets = list(budgets)
    if len(budgets) > MEMO_BUDGETS_MAX:
        memo["budgets"] = False
        return False
    by_profile: dict[object | None, list[Budget]] = defaultdict(list)
    for budget in budgets:
        by_profile[budget.profile_id].append(budget)
    memo["budgets"] = dict(by_profile)
    return memo["budgets"]


def budget_states_learn(memo: dict[str, Any], states: Iterable[BudgetState]) -> None:
    """Remember the period rows of ``states``, read at the memo's version (or
    after it), for ``budget_states_known``."""
    periods = memo_part(memo, "periods")
    for state in states:
        if state.period.pk is not None:
            periods[(state.budget.pk, state.period.start)] = (state.period.pk, state.period.end)


def amount_for(metric: str, amounts: Mapping[str, Decimal | int]) -> Decimal:
    return Decimal(amounts.get(metric, 0))


def _period_key(budget: Budget, org: Organization, at: datetime) -> PeriodKey:
    start, end = period_bounds(budget.period, org.tz, at)
    return str(budget.pk), start, end


def period_ensure(budget: Budget, start: datetime, end: datetime) -> tuple[BudgetPeriod, bool]:
    """The period row of ``budget`` starting at ``start``, created if missing with
    ``spent`` taken from the ledger. Returns (period, opened_here). When this
    call opened it, the ledger sum already includes whatever the current
    transaction recorded, so callers must not add those amounts again."""
    existing = BudgetPeriod.objects.filter(budget=budget, start=start).first()
    if existing is not None:
        return existing, False
    spent = spend_between(budget, start, end)
    table = BudgetPeriod._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO {table} (budget_id, start, "end", spent, reserved, opened_at) '  # noqa: S608
            "VALUES (%s, %s, %s, %s, 0, %s) ON CONFLICT (budget_id, start) DO NOTHING RETURNING id",
            [
                db_value(BudgetPeriod, "budget", budget.pk),
                connection.ops.adapt_datetimefield_value(start),
                connection.ops.adapt_datetimefield_value(end),
                connection.ops.adapt_decimalfield_value(spent, 24, 12),
                connection.ops.adapt_datetimefield_value(timezone.now()),
            ],
        )
        row = cursor.fetchone()
    period = BudgetPeriod.objects.get(budget=budget, start=start)
    return period, row is not None


def current_states(
    org: Organization, budgets: Iterable[Budget], at: datetime, *, open_missing: bool = True
) -> list[BudgetState]:
    """Each budget with its period containing ``at``, opened if needed.

    With ``open_missing=False`` (reads: dashboards, statuses) nothing is written
    and the ledger is not read: a period with no row yet is shown empty (and
    unsaved). That is exact, because whatever charges or reserves against a
    period opens it first, and a new budget opens its current period at once."""
    budgets = sorted(budgets, key=lambda b: str(b.pk))
    keys = {b.pk: _period_key(b, org, at) for b in budgets}
    existing: dict[tuple[object, datetime], BudgetPeriod] = {}
    if budgets:
        starts = {start for _, start, _ in keys.values()}
        for period in BudgetPeriod.objects.filter(budget__in=budgets, start__in=starts):
            existing[(period.budget_id, period.start)] = period
    states = []
    for budget in budgets:
        _, start, end = keys[budget.pk]
        period = existing.get((budget.pk, start))
        if period is None:
            period = (
                period_ensure(budget, start, end)[0]
                if open_missing
                else BudgetPeriod(
                    budget=budget, start=start, end=end, spent=Decimal(0), reserved=Decimal(0)
                )
            )
        states.append(BudgetState(budget, period))
    return states


_FILTERS = (  # (column, its "matches everything" test, Dimensions attribute)
    ("profile_id", "IS NULL", "profile_id"),
    ("api_key_id", "IS NULL", "api_key_id"),
    ("provider", "= ''", "provider"),
    ("model", "= ''", "model"),
    ("operation", "= ''", "operation"),
)


@functools.cache
def _with_current_period() -> str:
    """``budget b LEFT JOIN`` its period row containing the moment whose period
    starts are the parameters, one per period kind in ``Budget.Period`` order
    (``_current_starts``)."""
    whens = " ".join(f"WHEN '{p}' THEN %s" for p in _PERIOD_KINDS)  # our own literals
    return (
        f"{Budget._meta.db_table} b LEFT JOIN {_TABLE} p "
        f"ON p.budget_id = b.id AND p.start = CASE b.period {whens} END"
    )


def _current_starts(
    org: Organization, at: datetime
) -> tuple[dict[str, tuple[datetime, datetime]], list[object]]:
    """Each period kind's bounds at ``at`` in the organization's time zone, and
    their starts as the parameters of ``_with_current_period``."""
    bounds = {p: period_bounds(p, org.tz, at) for p in _PERIOD_KINDS}
    return bounds, [connection.ops.adapt_datetimefield_value(s) for s, _ in bounds.values()]


@functools.cache
def _states_sql(filters: str) -> str:
    """The read of budgets with their current periods, narrowed by ``filters``
    (SQL on ``b``, the budget)."""
    return (
        f"SELECT {_BUDGETS.columns('b')}, {_PERIODS.columns('p')} "  # noqa: S608 - our names
        f"FROM {_with_current_period()} "
        f"WHERE b.organization_id = %s AND b.active{filters} ORDER BY b.id"
    )


def budget_states_now(
    org: Organization,
    at: datetime,
    *,
    open_missing: bool = True,
    matching: Iterable[Dimensions] | None = None,
) -> list[BudgetState]:
    """Every active budget of ``org`` with its period containing ``at``, in
    budget id order, read with one query (budgets joined to their current
    period rows). ``open_missing`` as for ``current_states``. With
    ``matching``, only budgets that may match one of those dimensions (each
    filter compared with the values any of them has; callers still apply
    ``budget_matches``).

    This is the pre-flight check's and the ledger's read: it runs on every call,
    so it skips the ORM's statement building (the dearest part of a check), and
    with ``matching`` it reads the budgets that apply, however many the
    organization has."""
    return read(budget_states_read(org, at, open_missing=open_missing, matching=matching))


def budget_states_read(
    org: Organization,
    at: datetime,
    *,
    open_missing: bool = True,
    matching: Iterable[Dimensions] | None = None,
    profile_names: Sequence[str] = (),
) -> Read[list[BudgetState]]:
    """``budget_states_now`` as a ``Read``, to send with a request's other
    reads. ``profile_names`` stands for profiles not looked up yet (read with
    it): budgets of the profiles so named match too, as if their ids were in
    ``matching``."""
    bounds, params = _current_starts(org, at)
    params.append(db_value(Budget, "organization", org.pk))
    filters = ""
    if matching is not None:
        # budget_matches in SQL (an organization may hold a budget per profile):
        # each filter matches everything or one of the values the dimensions have.
        dims = list(matching)
        for column, everything, attr in _FILTERS:
            values = sorted({v for d in dims if (v := getattr(d, attr)) not in (None, "")}, key=str)
            filters += f" AND (b.{column} {everything}"
            if values:
                field = column.removesuffix("_id")
                some, values = in_list(
                    f"b.{column}",
                    [db_value(Budget, field, v) for v in values] if field != column else values,
                )
                filters += f" OR {some}"
                params += values
            if column == "profile_id" and profile_names:
                named, names = in_list("n.external_id", sorted(set(profile_names)))
                ids = (
                    f"SELECT n.id FROM {Profile._meta.db_table} n "  # noqa: S608 - our names
                    f"WHERE n.organization_id = %s AND {named}"
                )
                # PostgreSQL: an array built once (an init plan), which the
                # budgets' profile index can serve; IN (subquery) under an OR
                # is tested against every budget of the organization.
                if connection.vendor == "postgresql":
                    filters += f" OR b.profile_id = ANY(ARRAY({ids}))"
                else:
                    filters += f" OR b.profile_id IN ({ids})"
                params += [db_value(Profile, "organization", org.pk), *names]
            filters += ")"

    def load(rows: list[tuple]) -> list[BudgetState]:
        return _states_from_rows(org, rows, bounds, open_missing)

    return Read(_states_sql(filters), params, _BUDGETS.width + _PERIODS.width, load)


def _states_from_rows(
    org: Organization,
    rows: Sequence[Sequence[object]],
    bounds: Mapping[str, tuple[datetime, datetime]],
    open_missing: bool,
) -> list[BudgetState]:
    states = []
    for row in rows:
        budget = _BUDGETS.read(row)
        budget.organization = org
        period = _PERIODS.read(row, _BUDGETS.width)
        if period is None:
            start, end = bounds[budget.period]
            if open_missing:
                period = period_ensure(budget, start, end)[0]
            else:
                period = BudgetPeriod(
                    budget=budget, start=start, end=end, spent=Decimal(0), reserved=Decimal(0)
                )
        period.budget = budget
        states.append(BudgetState(budget, period))
    states.sort(key=lambda s: str(s.budget.pk))
    return states


@functools.cache
def _overview_sql() -> str:
    return (
        f"SELECT {_BUDGETS.columns('b')}, {_PERIODS.columns('p')} "  # noqa: S608 - our names
        f"FROM {_with_current_period()} "
        "WHERE b.organization_id = %s AND b.active AND (b.profile_id IS NULL OR b.id IN ("
        f"SELECT b.id FROM {_with_current_period()} "
        "WHERE b.organization_id = %s AND b.active AND b.profile_id IS NOT NULL "
        'ORDER BY (COALESCE(p.spent, 0) + COALESCE(p.reserved, 0)) / b."limit" DESC, b.id '
        "LIMIT %s)) ORDER BY b.id"
    )


def budget_states_overview(
    org: Organization, at: datetime, *, profile_budgets: int
) -> list[BudgetState]:
    """What an organization-wide view shows of its budgets, read only, in one
    query: every active budget not scoped to a profile, and the
    ``profile_budgets`` profile budgets nearest their limits (an organization
    may hold one per profile; the budgets list shows them all)."""
    bounds, starts = _current_starts(org, at)
    org_id = db_value(Budget, "organization", org.pk)
    # Not prepared: its LIMIT and the tenant's share of the budgets decide its plan.
    params = [*starts, org_id, *starts, org_id, int(profile_budgets)]
    rows = fetch(_overview_sql(), params, prepare=False)
    return _states_from_rows(org, rows, bounds, open_missing=False)


def _lock_timeout_value() -> str:
    """QUOTA_LOCK_TIMEOUT_MS as PostgreSQL's lock_timeout setting takes it."""
    return f"{int(settings.QUOTA_LOCK_TIMEOUT_MS)}ms"


def _lock_timeout() -> None:
    """The limiter's lock timeout for the rest of the current transaction."""
    if connection.vendor == "postgresql":
        fetch("SELECT set_config('lock_timeout', %s, true)", [_lock_timeout_value()])


# -- check and reserve -----------------------------------------------------------------


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


# -- charge, settle, release, expire ------------------------------------------------------


@dataclass
class ChargePlan:
    """What ``budget_charge`` will add, worked out from reads alone (no lock taken)."""

    org: Organization
    budgets: dict[str, Budget]
    current: dict[tuple[str, datetime], BudgetPeriod]
    increments: dict[PeriodKey, Decimal]
    settle_ids: set[uuid.UUID]
    # A key bound to a profile acts only for it: it settles that profile's
    # reservations only (None: any of the organization's).
    settle_profile_id: object | None = None


def budget_charge(*, org: Organization, charges: Sequence[Charge]) -> list[BudgetState]:
    """Add actual usage to every matching budget period (any action); never refuses,
    the money is already spent. Settles the reservations the charges cite, each
    exactly once. Called by the ledger inside the ingestion transaction.

    Returns the touched budgets' states for the period of the latest charge."""
    return budget_charge_apply(budget_charge_plan(org=org, charges=charges))


def budget_charge_plan(
    *,
    org: Organization,
    charges: Sequence[Charge],
    states: list[BudgetState] | None = None,
    settle_profile_id: object | None = None,
) -> ChargePlan:
    """The first half of ``budget_charge``: read the budgets with their current
    periods (one query: nearly every charge falls in the current period) and
    sum the increments. A caller that takes other row locks in the same
    transaction plans before taking them, so those locks wait less.
    ``states``: that read, done by the caller with its own reads (every budget
    that may match the charges, read just now with ``open_missing=False``).
    ``settle_profile_id``: settle only reservations taken for this profile (a
    key bound to it records the charges); the others cited stay held."""
    current = states
    if current is None:
        current = budget_states_now(
            org, timezone.now(), open_missing=False, matching={c.dims for c in charges}
        )
    increments: dict[PeriodKey, Decimal] = defaultdict(Decimal)
    tz = org.tz
    bounds: dict[tuple[str, date], tuple[datetime, datetime]] = {}  # periods start on local days
    budgets = [s.budget for s in current]
    # A batch has far fewer distinct dimensions than events: match each once.
    matching: dict[Dimensions, list[tuple[str, Budget]]] = {}
    for ch in charges:
        hits = matching.get(ch.dims)
        if hits is None:
            hits = matching[ch.dims] = [
                (str(b.pk), b) for b in budgets if budget_matches(b, ch.dims)
            ]
        if not hits:
            continue
        day = ch.occurred_at.astimezone(tz).date()
        for budget_id, budget in hits:
            span = bounds.get((budget.period, day))
            if span is None:
                span = bounds[(budget.period, day)] = period_bounds(
                    budget.period, tz, ch.occurred_at
                )
            increments[(budget_id, *span)] += amount_for(budget.metric, ch.amounts)
    return ChargePlan(
        org=org,
        budgets={str(b.pk): b for b in budgets},
        current={(str(s.budget.pk), s.period.start): s.period for s in current if s.period.pk},
        increments=increments,
        settle_ids={c.reservation_id for c in charges if c.reservation_id},
        settle_profile_id=settle_profile_id,
    )


def budget_charge_apply(plan: ChargePlan) -> list[BudgetState]:
    """The second half of ``budget_charge``: settle the cited reservations and
    change the counters, taking the period rows' locks in the one lock order."""
    increments, by_id = plan.increments, plan.budgets
    if not by_id and not plan.settle_ids:
        return []
    _, releases, _ = _claim_reservations(
        plan.org, plan.settle_ids, Reservation.Status.SETTLED, profile_id=plan.settle_profile_id
    )
    touched: dict[int, BudgetPeriod] = {}
    keys = _in_lock_order(set(increments) | set(releases))
    # One read for every period already open; only missing ones are opened.
    existing = dict(plan.current)
    existing |= _periods_at([k for k in keys if (k[0], k[1]) not in existing])
    opened_all = all((k[0], k[1]) in existing for k in keys if k in increments)
    if opened_all and connection.vendor == "postgresql":
        # The common case, every period open: all counter changes in one statement.
        changes = _counter_changes(keys, existing, increments, releases)
        _apply_all(changes)
        touched = {period.pk: period for period, _, _ in changes}
        keys = []
    for key in keys:  # in lock order, opening a missing period where it comes
        budget_id, start, end = key
        period = existing.get((budget_id, start))
        add = increments.get(key, Decimal(0))
        if period is None:
            if key not in increments:
                continue  # a hold on a period since deleted with its budget
            period, opened = period_ensure(by_id[budget_id], start, end)
            if opened:
                add = Decimal(0)  # the ledger sum it opened with includes these events
        _apply(period, spent=add, release=releases.get(key, Decimal(0)))
        touched[period.pk] = period
    return _touched_states(plan, touched.values())


def _in_lock_order(keys: Iterable[PeriodKey]) -> list[PeriodKey]:
    """Period keys in (budget, start) order, the one lock order of every counter writer."""
    return sorted(keys, key=lambda k: (k[0], k[1]))


def _counter_changes(
    keys: Sequence[PeriodKey],
    existing: Mapping[tuple[str, datetime], BudgetPeriod],
    increments: Mapping[PeriodKey, Decimal],
    releases: Mapping[PeriodKey, Decimal],
) -> list[tuple[BudgetPeriod, Decimal, Decimal]]:
    """(period, add to spent, release from reserved) for each key whose period
    row exists, in the keys' order; one entry per row (two keys can name one
    row: a hold's period as it was stored and as it is computed now, after a
    budget's kind of period changed), so no change to a row is lost."""
    changes: dict[int, tuple[BudgetPeriod, Decimal, Decimal]] = {}
    for k in keys:
        period = existing.get((k[0], k[1]))
        if period is None:
            continue
        _, add, release = changes.get(period.pk, (period, Decimal(0), Decimal(0)))
        changes[period.pk] = (
            period,
            add + increments.get(k, Decimal(0)),
            release + releases.get(k, Decimal(0)),
        )
    return list(changes.values())


def _touched_states(plan: ChargePlan, periods: Iterable[BudgetPeriod]) -> list[BudgetState]:
    """The states of the budgets whose ``periods`` a charge touched. A hold
    released on a budget deactivated since has no status to report."""
    by_id = plan.budgets
    return [BudgetState(by_id[str(p.budget_id)], p) for p in periods if str(p.budget_id) in by_id]


def _periods_at(keys: Sequence[PeriodKey]) -> dict[tuple[str, datetime], BudgetPeriod]:
    """The existing period rows of ``keys``, by (budget id, start): one query."""
    if not keys:
        return {}
    budget_ids = sorted({k[0] for k in keys})
    starts = sorted({k[1] for k in keys})
    budgets_in, budget_params = in_list(
        "p.budget_id", [db_value(BudgetPeriod, "budget", uuid.UUID(b)) for b in budget_ids]
    )
    starts_in, start_params = in_list(
        "p.start", [connection.ops.adapt_datetimefield_value(t) for t in starts]
    )
    rows = fetch(
        f"SELECT {_PERIODS.columns('p')} FROM {_TABLE} p "  # noqa: S608
        f"WHERE {budgets_in} AND {starts_in}",
        [*budget_params, *start_params],
    )
    periods = [_PERIODS.read(row) for row in rows]
    return {(str(p.budget_id), p.start): p for p in periods}


def _apply_all(changes: Sequence[tuple[BudgetPeriod, Decimal, Decimal]]) -> None:
    """PostgreSQL: ``_apply`` for many periods in one statement (``_apply_ctes``)."""
    changes = [c for c in changes if c[1] or c[2]]
    if not changes:
        return
    sql = f"WITH {_apply_ctes()} SELECT * FROM applied"  # noqa: S608 - our own SQL
    _refresh(changes, fetch(sql, _apply_params(changes)))


@functools.cache
def _apply_ctes(gate: str = "") -> str:
    """The counter changes as CTEs (``req``, ``locked``, ``applied``, which
    returns each changed row's id, spent and reserved) for one statement. The
    rows are locked first, in (budget, start) order, the one lock order of
    every counter writer; the aggregate over the locked rows finishes before
    any row is updated. With ``gate`` (SQL), nothing changes unless it holds."""
    where = f"WHERE {gate}" if gate else ""
    return f"""
        req AS (
            SELECT * FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[]) AS r(id, add, rel)
            {where}
        ), locked AS (
            SELECT p.id FROM {_TABLE} p WHERE p.id IN (SELECT id FROM req)
            ORDER BY p.budget_id, p.start FOR UPDATE
        ), applied AS (
            UPDATE {_TABLE} p SET spent = p.spent + r.add, reserved = GREATEST(p.reserved - r.rel, 0)
            FROM req r, (SELECT count(*) AS n FROM locked) l
            WHERE p.id = r.id
            RETURNING p.id, p.spent, p.reserved
        )"""  # noqa: S608 - our own table


def _apply_params(changes: Sequence[tuple[BudgetPeriod, Decimal, Decimal]]) -> list[object]:
    return [
        pg_array([p.pk for p, _, _ in changes]),
        pg_array([a for _, a, _ in changes]),
        pg_array([r for _, _, r in changes]),
    ]


def _refresh(
    changes: Sequence[tuple[BudgetPeriod, Decimal, Decimal]], rows: Iterable[Sequence[object]]
) -> None:
    """Put the (id, spent, reserved) rows ``applied`` returned on the periods."""
    fresh = {pid: (spent, reserved) for pid, spent, reserved in rows}
    for period, _, _ in changes:
        # A period deleted with its budget since it was read is simply gone.
        if period.pk in fresh:
            period.spent, period.reserved = fresh[period.pk]  # type: ignore[assignment]


@dataclass
class InlineCharge:
    """A charge plan's counter changes, as CTEs of the caller's own statement
    (see ``budget_charge_inline``)."""

    ctes: str  # empty when no budget applies; else they end with ``counters``
    params: list[object]
    _plan: ChargePlan
    _touched: list[BudgetPeriod]

    def states(self, rows: Iterable[Sequence[object]]) -> list[BudgetState]:
        """The touched budgets' states, given the (id, spent, reserved) rows
        ``counters`` returned."""
        fresh = {pid: (spent, reserved) for pid, spent, reserved in rows}
        touched = [p for p in self._touched if p.pk in fresh]  # one deleted since is gone
        for period in touched:
            period.spent, period.reserved = fresh[period.pk]  # type: ignore[assignment]
        return _touched_states(self._plan, touched)


@functools.cache
def _counters_cte(gate: str, changed: bool, seen: bool) -> str:
    """``counters`` (id, spent, reserved): the rows ``applied`` changed (only
    if ``gate`` holds) and those of the ids in a parameter, read for their
    status."""
    read = f"SELECT id, spent, reserved FROM {_TABLE} WHERE id = ANY(%s::bigint[])"  # noqa: S608
    if not changed:
        return f"counters AS ({read})"
    if not seen:
        return f"{_apply_ctes(gate)}, counters AS (SELECT * FROM applied)"  # noqa: S608
    return f"{_apply_ctes(gate)}, counters AS (SELECT * FROM applied UNION ALL {read})"  # noqa: S608


def budget_charge_inline(plan: ChargePlan, *, gate: str) -> InlineCharge | None:
    """``budget_charge_apply`` as part of the caller's statement, so that the
    ledger can record an event and charge its budgets in one statement (which,
    run in autocommit, commits on its own: no row lock is held across a round
    trip). ``gate`` (SQL) says whether to charge at all. The counters change
    after whatever the statement locks before these CTEs run, as in the
    ingestion transaction: ledger, rollups, counters. The last CTE,
    ``counters``, gives every touched budget's counters, changed or only read
    (a budget the event adds nothing to), so its status needs no read before.

    PostgreSQL only, and only for plans that add to periods already open and
    settle no reservation: None otherwise, and budget_charge_apply does it."""
    if connection.vendor != "postgresql" or plan.settle_ids:
        return None
    keys = _in_lock_order(plan.increments)
    if any((k[0], k[1]) not in plan.current for k in keys):
        return None
    changes = _counter_changes(keys, plan.current, plan.increments, {})
    touched = [p for p, _, _ in changes]
    if not touched:
        return InlineCharge("", [], plan, [])
    changed = [c for c in changes if c[1]]
    seen = [p.pk for p, add, _ in changes if not add]
    params = _apply_params(changed) if changed else []
    if seen or not changed:
        params.append(pg_array(seen))
    return InlineCharge(_counters_cte(gate, bool(changed), bool(seen)), params, plan, touched)


def _returning(sql: str, params: list[object], period_id: int) -> tuple[Decimal, Decimal] | None:
    """Run a counter UPDATE and give the row's new (spent, reserved), or None when
    its condition refused. PostgreSQL answers in the same round trip."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(sql + " RETURNING spent, reserved", params)
            return cursor.fetchone()
        cursor.execute(sql, params)
        if cursor.rowcount == 0:
            return None
    fresh = BudgetPeriod.objects.only("spent", "reserved").get(pk=period_id)
    return fresh.spent, fresh.reserved


def _hold(period_id: int, amount: Decimal, limit: Decimal) -> tuple[Decimal, Decimal] | None:
    """Add ``amount`` to ``reserved`` only if spent + reserved + amount stays within
    ``limit``; the row lock makes the check and the change one step."""
    a = connection.ops.adapt_decimalfield_value(Decimal(amount), 30, 12)
    lim = connection.ops.adapt_decimalfield_value(Decimal(limit), 30, 12)
    return _returning(
        f"UPDATE {_TABLE} SET reserved = reserved + CAST(%s AS NUMERIC) "  # noqa: S608
        "WHERE id = %s AND spent + reserved + CAST(%s AS NUMERIC) <= CAST(%s AS NUMERIC)",
        [a, period_id, a, lim],
        period_id,
    )


def _apply(period: BudgetPeriod, *, spent: Decimal, release: Decimal) -> None:
    """Add actual usage and take a settled hold off, in one UPDATE; the period
    object gets the row's new figures."""
    if not spent and not release:
        return
    a = connection.ops.adapt_decimalfield_value(Decimal(spent), 30, 12)
    r = connection.ops.adapt_decimalfield_value(Decimal(release), 30, 12)
    # CASE rather than GREATEST/MAX: the same SQL on PostgreSQL and SQLite.
    row = _returning(
        f"UPDATE {_TABLE} SET spent = spent + CAST(%s AS NUMERIC), "  # noqa: S608
        "reserved = CASE WHEN reserved - CAST(%s AS NUMERIC) < 0 THEN 0 "
        "ELSE reserved - CAST(%s AS NUMERIC) END WHERE id = %s",
        [a, r, r, period.pk],
        period.pk,
    )
    if row is not None:
        period.spent, period.reserved = row


def _live_holds() -> models.QuerySet[ReservationHold]:
    """The holds of reservations still held: what periods' ``reserved`` sums."""
    return ReservationHold.objects.filter(reservation__status=Reservation.Status.HELD)


def period_held(period_id: int) -> Decimal:
    """What the live holds on a period add up to: what its ``reserved`` is."""
    total = _live_holds().filter(period_id=period_id).aggregate(total=models.Sum("amount"))
    return total["total"] or Decimal(0)


def _claim_reservations(
    org: Organization, ids: Iterable[uuid.UUID], status: str, *, profile_id: object | None = None
) -> tuple[list[uuid.UUID], dict[PeriodKey, Decimal], dict[PeriodKey, BudgetPeriod]]:
    """Move held reservations to ``status`` (only those still held: the row
    count decides, so a retry or a race releases nothing twice) and return the
    amounts to take off each period's ``reserved``, with those periods. With
    ``profile_id``, only reservations taken for that profile."""
    ids = list(ids)
    if not ids:
        return [], {}, {}
    held = Reservation.objects.filter(organization=org, status=Reservation.Status.HELD)
    if profile_id is not None:
        held = held.filter(profile_id=profile_id)
    won = []
    for rid in sorted(ids, key=str):
        if held.filter(pk=rid).update(status=status, ended_at=timezone.now()):
            won.append(rid)
    releases: dict[PeriodKey, Decimal] = defaultdict(Decimal)
    periods: dict[PeriodKey, BudgetPeriod] = {}
    for hold in ReservationHold.objects.filter(reservation_id__in=won).select_related("period"):
        p = hold.period
        key = (str(p.budget_id), p.start, p.end)
        releases[key] += hold.amount
        periods[key] = p
    return won, releases, periods


def _release_holds(
    releases: Mapping[PeriodKey, Decimal], periods: Mapping[PeriodKey, BudgetPeriod]
) -> None:
    for key in _in_lock_order(releases):
        _apply(periods[key], spent=Decimal(0), release=releases[key])


def reservation_release(
    *, org: Organization, reservation_id: uuid.UUID, profile_id: object | None = None
) -> Reservation:
    """Release a hold. Raises ReservationNotFound for an unknown id or another
    tenant's (with ``profile_id``, also another profile's: a key bound to a
    profile acts only for it); releasing a reservation no longer held changes
    nothing."""
    found = Reservation.objects.filter(pk=reservation_id, organization=org)
    if profile_id is not None:
        found = found.filter(profile_id=profile_id)
    reservation = found.first()
    if reservation is None:
        raise ReservationNotFound(str(reservation_id))
    with transaction.atomic():
        _, releases, periods = _claim_reservations(
            org, [reservation_id], Reservation.Status.RELEASED, profile_id=profile_id
        )
        _release_holds(releases, periods)
    reservation.refresh_from_db()
    return reservation


def reservations_expire(*, org: Organization | None = None, now: datetime | None = None) -> int:
    """Expire held reservations past their ``expires_at`` and return their amounts;
    returns how many expired. Idempotent under concurrency."""
    now = now or timezone.now()
    qs = Reservation.objects.filter(status=Reservation.Status.HELD, expires_at__lte=now)
    if org is not None:
        qs = qs.filter(organization=org)
    count = 0
    # Oldest first.
    for organization_id, rid in qs.order_by("expires_at").values_list("organization_id", "id")[
        :10_000
    ]:
        with transaction.atomic():
            target = org if org is not None else Organization(pk=organization_id)
            won, releases, periods = _claim_reservations(target, [rid], Reservation.Status.EXPIRED)
            _release_holds(releases, periods)
            count += len(won)
    return count


def reservations_purge(*, now: datetime | None = None, batch: int = 5_000) -> int:
    """Delete reservations that ended (settled, released, expired) more than
    RESERVATION_RETENTION_DAYS ago, with their holds; returns how many.

    They no longer count anywhere: counters were settled when they ended, and
    usage events keep the id they cited as a plain value. Held reservations
    are never touched. Deletes in batches, each its own short transaction."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=int(settings.RESERVATION_RETENTION_DAYS))
    ended = Reservation.objects.exclude(status=Reservation.Status.HELD).filter(ended_at__lt=cutoff)
    total = 0
    while True:
        ids = list(ended.order_by().values_list("id", flat=True)[:batch])
        if not ids:
            return total
        with transaction.atomic():
            ReservationHold.objects.filter(reservation_id__in=ids).delete()
            total += (
                Reservation.objects.filter(id__in=ids).delete()[1].get(Reservation._meta.label, 0)
            )


# -- budgets ---------------------------------------------------------------------------

_COUNTED = ("profile", "api_key", "provider", "model", "operation", "metric", "period")


def _normalized(fields: dict[str, object]) -> dict[str, object]:
    """Providers are matched as ingestion records them: trimmed, lower case."""
    if isinstance(provider := fields.get("provider"), str):
        fields["provider"] = provider.strip().lower()
    return fields


# An ingestion reads the budgets before it writes (a round trip for one event,
# up to about a second for a large batch) and charges those it read: one in
# flight when a budget appears, or is switched on or re-scoped, misses it,
# and the ledger sum the budget opened or was recounted with did not have its
# events yet. Once these seconds have passed the budget is reconciled against
# the ledger (the hourly reconciliation would find it too, later).
BUDGET_SETTLE_SECONDS = 10


def _settle_later(*budgets: Budget) -> None:
    """After the caller's transaction commits, queue the reconciliation of
    ``budgets`` (one organization's) BUDGET_SETTLE_SECONDS later."""
    org_id = str(budgets[0].organization_id)
    budget_ids = [str(b.pk) for b in budgets]

    def enqueue() -> None:
        from quotas.tasks import reconcile_counters

        try:
            reconcile_counters.apply_async(
                kwargs={"org_id": org_id, "budget_ids": budget_ids},
                countdown=BUDGET_SETTLE_SECONDS,
            )
        except Exception:  # noqa: BLE001 - the hourly reconciliation catches up
            logger.warning("could not queue the settling of budgets %s", budget_ids, exc_info=True)

    transaction.on_commit(enqueue)


def budget_create(*, org: Organization, **fields: object) -> Budget:
    """Create a budget and open its current period at once, starting from what
    the ledger says its filters already used this period; reconciled again
    once ingestions in flight have finished (``BUDGET_SETTLE_SECONDS``)."""
    fields = _normalized(fields)
    Budget(organization=org, **fields).full_clean()
    with transaction.atomic():
        # The organization first, as every change to its setup, and as it
        # stands then: its period opens in the zone in force.
        org = organization_locked(org.pk)
        budget = Budget(organization=org, **fields)
        budget.save()
        current_states(org, [budget], timezone.now())
        _settle_later(budget)
    return budget


def budget_update(*, budget: Budget, **changes: object) -> Budget:
    """Change a budget. When what it counts changes (filters, metric, period),
    or it is switched back on (charges skip an inactive budget), the current
    period's ``spent`` is recomputed from the ledger. Holds stay, except when
    the metric changes: they are amounts of the old one, and are let go."""
    changes = _normalized(changes)
    changed = {k for k, v in changes.items() if getattr(budget, k) != v}
    metric_changed = "metric" in changed
    recount = bool(changed & set(_COUNTED)) or ("active" in changed and changes["active"] is True)
    for key, value in changes.items():
        setattr(budget, key, value)
    budget.full_clean()
    with transaction.atomic():
        # The organization first, as every change to its setup, and as it
        # stands then: the period is reckoned in the zone in force.
        budget.organization = organization_locked(budget.organization_id)
        if not Budget.objects.filter(pk=budget.pk).exists():
            # Deleted while this change waited for the lock: saving would
            # insert it again.
            raise Budget.DoesNotExist("The budget was deleted meanwhile.")
        budget.save()
        _period_reset(
            budget,
            recount=recount,
            drop_holds=metric_changed,
            move_holds="period" in changed,
        )
    return budget


def _period_reset(budget: Budget, *, recount: bool, drop_holds: bool, move_holds: bool) -> None:
    """In the caller's transaction, after a change to ``budget`` (or to its
    organization's time zone): open its period as it is now reckoned, with
    ``recount`` its ``spent`` summed again from the ledger; ``drop_holds``
    lets go of its holds (amounts of a metric it no longer counts);
    ``move_holds`` moves those of its other open rows (periods reckoned the
    old way) to the current one, which reservations consult from now on."""
    org = budget.organization
    now = timezone.now()
    start, end = period_bounds(budget.period, org.tz, now)
    # The rows it may change, in start order (the one lock order of every
    # counter writer) and before the current period is opened below (its
    # insert locks it, and it comes last): the open ones, the one starting
    # where the period now starts, and, to drop holds, those holding.
    # A charge being committed finishes first, and a recount includes it.
    may_change = Q(start__lte=now, end__gt=now) | Q(start=start)
    if drop_holds:
        may_change |= Q(reserved__gt=0)
    rows = dict(
        BudgetPeriod.objects.select_for_update()
        .filter(may_change, budget=budget)
        .order_by("start")
        .values_list("pk", "reserved")
    )
    (state,) = current_states(org, [budget], now)
    if state.period.end != end:
        # Another period began at the same instant (a day and a month on the
        # 1st): the row is this budget's, its end is the one reckoned now.
        BudgetPeriod.objects.filter(pk=state.period.pk).update(end=end)
        state.period.end = end
    if recount:
        spent = spend_between(budget, start, end)
        BudgetPeriod.objects.filter(pk=state.period.pk).update(spent=spent)
        _settle_later(budget)
    others = [pk for pk in rows if pk != state.period.pk]
    if drop_holds:
        # Holds are amounts of the old metric (dollars, not tokens): the
        # budget lets them go; their reservations keep their other holds.
        held = [pk for pk, reserved in rows.items() if reserved > 0]
        ReservationHold.objects.filter(period_id__in=held).delete()
        BudgetPeriod.objects.filter(pk__in=held).update(reserved=0)
    elif move_holds and others:
        ReservationHold.objects.filter(period_id__in=others).update(period_id=state.period.pk)
        _periods_reserved_from_holds([*others, state.period.pk])
    # Any other open row was reckoned another way (another kind of period, or
    # another time zone while the budget was off): it ends now, and nothing is
    # counted on it any more. Reconciliation, which compares open rows with
    # the ledger, leaves it be, and a reservation that read it finds its end
    # is not its period's and reads again (``_reserve_sql``).
    if others:
        BudgetPeriod.objects.filter(pk__in=others, start__lt=now, end__gt=now).update(end=now)


def budgets_rezone(*, org: Organization, previous: str | None = None) -> None:
    """In the caller's transaction, after ``org``'s time zone changed (``org``
    holds the new one): every active budget's period is reckoned in the new
    zone, so each opens its current period as it now falls, its ``spent``
    summed from the ledger, and its in-flight holds move there; otherwise the
    new period would start with nothing reserved and let reservations pass
    the limit until the old holds end. The rows reckoned the old way end now.
    A ``total`` budget has one period whatever the zone, and so has a kind of
    period whose bounds the change leaves where they were (``previous``, the
    old zone's name: Europe/Paris to Europe/Berlin, or UTC to Europe/London in
    winter), whose rows writers still reckoning the old way may be opening.

    What ``_period_reset`` does for one budget, for all of them in a fixed
    number of statements (the period rows stay locked until the caller
    commits, so however many budgets, briefly): lock the open rows and those
    at the new starts in (budget, start) order, the one lock order of every
    counter writer; open the missing ones; give each its end; recount them
    from one read of the ledger per kind of period; move the holds; set
    ``reserved`` from the live holds; end the old rows."""
    now = timezone.now()
    rezoned = {
        kind
        for kind in _PERIOD_KINDS
        if kind != Budget.Period.TOTAL
        and (
            previous is None
            or period_bounds(kind, org.tz, now) != period_bounds(kind, ZoneInfo(previous), now)
        )
    }
    budgets = [
        b
        for b in Budget.objects.filter(organization=org, active=True).order_by("id")
        if b.period in rezoned
    ]
    if not budgets:
        return
    for budget in budgets:
        budget.organization = org
    bounds = {kind: period_bounds(kind, org.tz, now) for kind in {b.period for b in budgets}}
    span = {b.pk: bounds[b.period] for b in budgets}
    ids = list(span)

    def locked() -> list[tuple[int, object, datetime, datetime]]:
        return list(
            BudgetPeriod.objects.select_for_update()
            .filter(
                Q(start__lte=now, end__gt=now) | Q(start__in={s for s, _ in bounds.values()}),
                budget_id__in=ids,
            )
            .order_by("budget_id", "start")
            .values_list("pk", "budget_id", "start", "end")
        )

    rows = locked()
    found = {(budget_id, start) for _, budget_id, start, _ in rows}
    missing = [b for b in budgets if (b.pk, span[b.pk][0]) not in found]
    if missing:
        # Opened empty, recounted below with the others. A row another
        # transaction opened meanwhile is left as it is, and locked next.
        BudgetPeriod.objects.bulk_create(
            [
                BudgetPeriod(
                    budget=b,
                    start=span[b.pk][0],
                    end=span[b.pk][1],
                    spent=Decimal(0),
                    reserved=Decimal(0),
                    opened_at=now,
                )
                for b in missing
            ],
            ignore_conflicts=True,
        )
        rows = locked()
    current = {budget_id: pk for pk, budget_id, start, _ in rows if start == span[budget_id][0]}
    old = {pk: current[budget_id] for pk, budget_id, start, end in rows
           if pk != current[budget_id] and start <= now < end}  # fmt: skip
    spent: dict[object, Decimal] = {}
    for kind, (start, end) in bounds.items():
        spent |= spend_between_many([b for b in budgets if b.period == kind], start, end)
    _periods_set(
        [current[b.pk] for b in budgets],
        ends=[span[b.pk][1] for b in budgets],
        spent=[spent[b.pk] for b in budgets],
    )
    if old:
        fetch(
            f"UPDATE {ReservationHold._meta.db_table} h SET period_id = m.new "  # noqa: S608
            "FROM unnest(%s::bigint[], %s::bigint[]) AS m(old, new) "
            "WHERE h.period_id = m.old RETURNING h.period_id",
            [pg_array(list(old)), pg_array(list(old.values()))],
        )
        BudgetPeriod.objects.filter(pk__in=list(old), start__lt=now, end__gt=now).update(end=now)
    # Every row it touched holds what its live holds add up to, as after a
    # reset of one budget.
    _periods_reserved_from_holds([*old, *current.values()])
    _settle_later(*budgets)


def _periods_set(ids: list[int], *, ends: list[datetime], spent: list[Decimal]) -> None:
    """Give each period of ``ids`` its end and its ``spent``: one statement."""
    fetch(
        f'UPDATE {_TABLE} p SET "end" = v.period_end, spent = v.spent '  # noqa: S608
        "FROM unnest(%s::bigint[], %s::timestamptz[], %s::numeric[]) "
        "AS v(id, period_end, spent) WHERE p.id = v.id RETURNING p.id",
        [pg_array(ids), pg_array(ends), pg_array(spent)],
    )


def _periods_reserved_from_holds(ids: list[int]) -> None:
    """Set ``reserved`` of each period of ``ids`` to its live holds
    (``period_held``): one statement."""
    BudgetPeriod.objects.filter(pk__in=ids).update(
        reserved=Coalesce(
            Subquery(
                _live_holds()
                .filter(period_id=OuterRef("pk"))
                .values("period_id")
                .annotate(total=models.Sum("amount"))
                .values("total")
            ),
            Decimal(0),
        )
    )


def budget_delete(*, budget: Budget) -> None:
    """Delete a budget with its periods; its open reservations lose that hold."""
    budgets_delete(budgets=[budget])


def budgets_delete(*, budgets: Iterable[Budget]) -> None:
    """Delete budgets with their periods. Their organizations' rows are
    locked first, as every other change to an organization's setup takes them
    (a budget's own change through its trigger, a time zone change before its
    period rows): deleting the period rows first and then bumping the version
    (the triggers) deadlocked with a time zone change."""
    budgets = list(budgets)
    with transaction.atomic():
        organizations_lock({b.organization_id for b in budgets})
        Budget.objects.filter(pk__in=[b.pk for b in budgets]).delete()
