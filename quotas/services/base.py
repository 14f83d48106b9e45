"""What the limiter's services share: the dimensions a budget filters on, a
budget's state, a charge, the check's result, the errors, and the row readers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import models

from config.rows import RowReader
from quotas.models import Budget, BudgetPeriod, Reservation

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
    """Actual usage of one event (or of events summed that share their
    dimensions, their local day and their reservation): amounts by budget
    metric (``cost``, ``requests``, ``input_tokens``, ...), at ``occurred_at``,
    possibly settling a reservation."""

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


def rows_lock(rows: models.QuerySet, *order: str) -> None:
    """In the caller's transaction, lock ``rows`` (theirs only, not the rows
    of a table their filter joins) FOR UPDATE in ``order``: the one order
    every writer of those rows takes them in."""
    list(rows.select_for_update(of=("self",)).order_by(*order).values_list("pk", flat=True))
