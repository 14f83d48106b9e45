"""Which budgets a call matches and their current periods: read, opened, and
kept in the setup memo."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, cast

from django.conf import settings
from django.db import connection
from django.utils import timezone

from config.rows import Read, db_value, fetch, in_list, read
from profiles.models import Organization, Profile
from profiles.setup import memo_part
from quotas.models import Budget, BudgetPeriod
from quotas.periods import period_bounds
from quotas.services.base import (
    _BUDGETS,
    _PERIOD_KINDS,
    _PERIODS,
    _TABLE,
    BudgetState,
    Dimensions,
    PeriodKey,
)
from quotas.spend import spend_between


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
        # The only table selected: no row has a NULL id, so none reads as None.
        budgets = cast("list[Budget]", [_BUDGETS.read(row) for row in rows])
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
        learned: list[Budget] = read(memo_budgets_read(org))
        budgets = budgets_learn(memo, learned)
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
            # Counters unknown (None) on purpose: the caller's statement reads them.
            period = BudgetPeriod(  # type: ignore[misc]
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
    period: BudgetPeriod | None
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
        assert budget is not None  # the FROM side of the join: its id is never NULL
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
