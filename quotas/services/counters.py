"""Counters that change with usage: charge, settle, release, expire, purge."""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from config.rows import db_value, fetch, in_list, pg_array
from profiles.models import Organization
from quotas.models import Budget, BudgetPeriod, Reservation, ReservationHold
from quotas.periods import period_bounds
from quotas.services.base import (
    _PERIODS,
    _TABLE,
    BudgetState,
    Charge,
    Dimensions,
    PeriodKey,
    ReservationNotFound,
    rows_lock,
)
from quotas.services.periods import (
    amount_for,
    budget_matches,
    budget_states_now,
    period_ensure,
)


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
    settle_profile_id: uuid.UUID | None = None


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
    settle_profile_id: uuid.UUID | None = None,
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
    # The only table selected: no row has a NULL id, so none reads as None.
    periods = cast("list[BudgetPeriod]", [_PERIODS.read(row) for row in rows])
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


def _returning(sql: str, params: Sequence[Any], period_id: int) -> tuple[Decimal, Decimal] | None:
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
    org: Organization, ids: Iterable[uuid.UUID], status: str, *, profile_id: uuid.UUID | None = None
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
    *, org: Organization, reservation_id: uuid.UUID, profile_id: uuid.UUID | None = None
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


def holds_lock(holds: models.QuerySet[ReservationHold]) -> None:
    """In the caller's transaction, before deleting ``holds``: lock them in id
    order, the one order of every hold deleter (the purge of old reservations
    reaches them by reservation, a deleted budget's periods by period: each
    deleting in its own order, they could wait on each other crosswise)."""
    rows_lock(holds, "pk")


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
            holds = ReservationHold.objects.filter(reservation_id__in=ids)
            holds_lock(holds)
            holds.delete()
            total += (
                Reservation.objects.filter(id__in=ids).delete()[1].get(Reservation._meta.label, 0)
            )
