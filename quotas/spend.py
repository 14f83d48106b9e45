"""Where the limiter learns what was already spent, without knowing the ledger.

The limiter knows nothing of prices or events; the costs app registers a
function that sums a budget's metric over its filters between two instants.
A period opened for the first time (a new month, or a budget created
mid-month) starts from that sum, and reconciliation compares counters to it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quotas.models import Budget

SpendSource = Callable[["Budget", datetime, datetime], Decimal]
_source: SpendSource | None = None


def register_spend_source(source: SpendSource) -> None:
    global _source
    _source = source


def spend_between(budget: Budget, start: datetime, end: datetime) -> Decimal:
    """What the ledger says ``budget``'s filters consumed of its metric in [start, end)."""
    if _source is None:
        return Decimal(0)
    return _source(budget, start, end)
