"""Where the limiter learns what was already spent, without knowing the ledger.

The limiter knows nothing of prices or events; the costs app registers a
function that sums a budget's metric over its filters between two instants.
A period opened for the first time (a new month, or a budget created
mid-month) starts from that sum, and reconciliation compares counters to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quotas.models import Budget

SpendSource = Callable[["Budget", datetime, datetime], Decimal]
ManySpendSource = Callable[[Sequence["Budget"], datetime, datetime], dict[object, Decimal]]
_source: SpendSource | None = None
_many: ManySpendSource | None = None


def register_spend_source(source: SpendSource, many: ManySpendSource | None = None) -> None:
    """``source`` sums one budget; ``many``, if given, the budgets of one
    organization over one span at once."""
    global _source, _many
    _source, _many = source, many


def spend_between(budget: Budget, start: datetime, end: datetime) -> Decimal:
    """What the ledger says ``budget``'s filters consumed of its metric in [start, end)."""
    if _source is None:
        return Decimal(0)
    return _source(budget, start, end)


def spend_between_many(
    budgets: Sequence[Budget], start: datetime, end: datetime
) -> dict[object, Decimal]:
    """``spend_between`` of each of one organization's ``budgets`` over one
    span, by budget id."""
    if _many is not None:
        return _many(budgets, start, end)
    return {b.pk: spend_between(b, start, end) for b in budgets}
