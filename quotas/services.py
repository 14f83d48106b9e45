"""The limiter engine's writes. It counts amounts along dimensions it is handed
and knows nothing of prices: the ledger tells it what was spent."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from profiles.models import Organization


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


def budget_charge(*, org: Organization, charges: Sequence[Charge]) -> None:
    """Add actual usage to every matching budget period; never refuses (the money
    is already spent). Called by the ledger inside the ingestion transaction.

    No budgets exist yet, so there is nothing to charge."""
    return None
