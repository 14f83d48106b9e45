"""One usage event on its way into the ledger: the validated input, what
recording it gave back, and its price."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection

from costs.models import UsageEvent
from costs.pricing.engine import price_usage
from costs.selectors.catalog import PriceBook, ResolvedModel, model_name
from costs.services.ledger import LEDGER_COLUMNS
from profiles.models import Organization
from quotas.services import BudgetState

# No single call costs a billion dollars: a larger figure is a client error,
# and it keeps sums far inside the rollup and counter columns.
MAX_EVENT_COST = Decimal(10**9)


@dataclass
class EventInput:
    """One validated event as the API hands it over."""

    idempotency_key: str
    request_hash: str
    provider: str
    model: str
    operation: str
    usage: dict[str, int | Decimal]
    occurred_at: datetime
    profile: str | None = None
    cost: Decimal | None = None
    revenue: Decimal | None = None
    tags: dict[str, str] = field(default_factory=dict)
    reservation_id: uuid.UUID | None = None


class Recorded:
    """One ledger row as recorded (or found already recorded): its column values
    by attribute name, and the model instance, built from them when first asked
    for (the API answers from the values alone)."""

    __slots__ = ("_event", "_related", "values")

    def __init__(
        self, values: Mapping[str, Any], related: Mapping[str, object] | None = None
    ) -> None:
        self.values = values
        self._related = related  # instances to attach, so reaching them needs no query
        self._event: UsageEvent | None = None

    @property
    def event(self) -> UsageEvent:
        if self._event is None:
            self._event = UsageEvent.from_db(
                connection.alias, LEDGER_COLUMNS, [self.values[c] for c in LEDGER_COLUMNS]
            )
            if self._related:
                self._event._state.fields_cache.update(self._related)
        return self._event


@dataclass
class EventResult:
    status: int  # 201 recorded, 200 replay, 409 conflicting reuse, 400 refused
    recorded: Recorded | None
    budgets: list[BudgetState] = field(default_factory=list)
    error: dict[str, str] | None = None

    @property
    def event(self) -> UsageEvent | None:
        return self.recorded.event if self.recorded is not None else None


class UsageNeeded(Exception):
    """An event the catalog must price sent a cost and no usage to price."""

    def __init__(self, details: dict[str, str]) -> None:
        super().__init__("usage needed")
        self.details = details


def event_price(
    ev: EventInput, org: Organization, book: PriceBook, resolved: ResolvedModel | None
) -> tuple[str, int | None, object | None, Decimal, dict[str, str], bool]:
    """(model shown, ai_model id, price id, cost, breakdown, priced) for one event."""
    shown = model_name(resolved, ev.model)
    price = book.at(resolved.id, ev.occurred_at) if resolved else None
    if price is not None and not (ev.cost is not None and org.allow_client_pricing):
        if ev.cost and not any(ev.usage.values()):
            # The catalog wins, and has nothing to price: the client's cost
            # would have been recorded as 0.
            raise UsageNeeded(
                {
                    "usage": f"Required: the catalog prices {ev.provider}/{shown}, and this "
                    "organization does not take client-priced events (allow_client_pricing)."
                }
            )
        result = price_usage(price.rates, ev.usage)
        breakdown = {k: str(v) for k, v in result.lines.items()}
        return shown, resolved.id if resolved else None, price.id, result.total, breakdown, True
    if ev.cost is not None:  # the client priced a service the catalog does not
        return (
            shown,
            resolved.id if resolved else None,
            None,
            ev.cost,
            {"client": str(ev.cost)},
            True,
        )
    return shown, resolved.id if resolved else None, None, Decimal(0), {}, False
