"""Budgets created, changed, deleted and moved to a new time zone, their
counters kept equal to the ledger."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import models, transaction
from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.rows import fetch, pg_array
from profiles.models import Organization
from profiles.services import organization_locked, organizations_lock
from quotas.models import Budget, BudgetPeriod, Reservation, ReservationHold
from quotas.periods import period_bounds
from quotas.services.base import (
    _PERIOD_KINDS,
    _TABLE,
    rows_lock,
)
from quotas.services.counters import (
    _live_holds,
    holds_lock,
)
from quotas.services.periods import (
    current_states,
    period_ensure,
)
from quotas.spend import spend_between, spend_between_many

logger = logging.getLogger(__name__)

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
    # counter writer): the open ones, the one starting where the period now
    # starts, and, to drop holds, those holding. A charge being committed
    # finishes first, and a recount includes it.
    may_change = Q(start__lte=now, end__gt=now) | Q(start=start)
    if drop_holds:
        may_change |= Q(reserved__gt=0)
    rows_of = (
        BudgetPeriod.objects.select_for_update()
        .filter(may_change, budget=budget)
        .order_by("start")
        .values_list("pk", "reserved")
    )
    # Those starting before the current period, then the current one, opened
    # if missing (its insert locks it), then the others: from daily to monthly
    # mid-month, the month's row comes before today's, which a writer opening
    # the month's row and charging today's would otherwise wait for crosswise.
    rows = dict(rows_of.filter(start__lt=start))
    current, _ = period_ensure(budget, start, end)
    rows |= dict(rows_of.filter(start__gte=start))
    if current.end != end:
        # Another period began at the same instant (a day and a month on the
        # 1st): the row is this budget's, its end is the one reckoned now.
        BudgetPeriod.objects.filter(pk=current.pk).update(end=end)
        current.end = end
    if recount:
        spent = spend_between(budget, start, end)
        BudgetPeriod.objects.filter(pk=current.pk).update(spent=spent)
        _settle_later(budget)
    others = [pk for pk in rows if pk != current.pk]
    if drop_holds:
        # Holds are amounts of the old metric (dollars, not tokens): the
        # budget lets them go; their reservations keep their other holds.
        held = [pk for pk, reserved in rows.items() if reserved > 0]
        ReservationHold.objects.filter(period_id__in=held).delete()
        BudgetPeriod.objects.filter(pk__in=held).update(reserved=0)
    elif move_holds and others:
        ReservationHold.objects.filter(period_id__in=others).update(period_id=current.pk)
        _periods_reserved_from_holds([*others, current.pk])
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

    def locked() -> list[tuple[int, uuid.UUID, datetime, datetime]]:
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


def budget_rows_lock(
    *, budgets: models.QuerySet[Budget], reservations: models.QuerySet[Reservation] | None = None
) -> None:
    """In the caller's transaction, before deleting rows whose deletion reaches
    ``budgets`` (theirs, a profile's, a key's, an organization's): lock the
    held ones of the ``reservations`` it changes in id order, then the
    budgets' period rows in (budget, start) order, as every counter writer
    takes them (a charge claims held reservations in id order, then changes
    its counters in that order). The deletion's cascade takes the period rows
    in the table's order: with a writer holding one of two periods, each
    waited for the other. Then the periods' holds in id order, as the purge
    of old reservations takes them (the cascade deletes them in the order of
    their periods). Ended reservations are left to the cascade, after their
    holds, as the purge deletes them."""
    if reservations is not None:
        rows_lock(reservations.filter(status=Reservation.Status.HELD), "pk")
    rows_lock(BudgetPeriod.objects.filter(budget__in=budgets), "budget_id", "start")
    holds_lock(ReservationHold.objects.filter(period__budget__in=budgets))


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
    chosen = Budget.objects.filter(pk__in=[b.pk for b in budgets])
    with transaction.atomic():
        organizations_lock({b.organization_id for b in budgets})
        budget_rows_lock(budgets=chosen)
        chosen.delete()
