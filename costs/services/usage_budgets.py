"""Recorded usage and the budgets it counts against: the charge a ledger row
makes, the budgets to report for each row, and the checks queued once the
recording commits."""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from django.db import transaction

from costs.pricing.engine import METERS
from costs.selectors.budget_spend import budget_amounts
from costs.services.ledger import InsertedGroup, LedgerRow
from costs.services.rollups import METER_AT, SUM_COLUMNS
from profiles.models import Organization
from quotas.services import BudgetState, Charge, Dimensions, budget_matches

logger = logging.getLogger(__name__)

# What a budget's filters look at in a ledger row, in ``Dimensions`` order.
_DIMENSIONS = ("profile_id", "api_key_id", "provider", "model", "operation")
_dims_key = operator.itemgetter(*_DIMENSIONS)


def row_dimensions(row: Mapping[str, Any]) -> Dimensions:
    """The dimensions budgets filter a ledger row (or its values) on."""
    return Dimensions(*_dims_key(row))


def usage_charge(row: LedgerRow, dims: dict[tuple, Dimensions]) -> Charge:
    """The charge a ledger row makes on its budgets; ``dims`` shares one
    ``Dimensions`` between rows with the same ones (a batch has few)."""
    return Charge(
        dims=_shared_dimensions(_dims_key(row), dims),
        occurred_at=row["occurred_at"],
        amounts=budget_amounts({m: row[m] for m in METERS}, row["cost"]),
        reservation_id=row["reservation_id"],
    )


def group_charge(group: InsertedGroup, api_key_id: object, dims: dict[tuple, Dimensions]) -> Charge:
    """The charge rows inserted together (``ledger_insert_grouped``) make:
    ``usage_charge`` of each, summed. They share their dimensions, their
    reservation and their local day, so their periods (which begin on local
    days: ``budget_charge_plan`` finds them by the day of ``occurred_at``)."""
    _, _, profile_id, provider, model, operation = group.key
    key = (profile_id, api_key_id, provider, model, operation)
    meters = dict(zip(METERS, (group.sums[at] for at in METER_AT), strict=True))
    amounts = budget_amounts(meters, group.sums[_COST_AT])  # type: ignore[arg-type]
    amounts["requests"] = group.requests
    return Charge(
        dims=_shared_dimensions(key, dims),
        occurred_at=group.occurred_at,
        amounts=amounts,
        reservation_id=group.reservation_id,
    )


_COST_AT = SUM_COLUMNS.index("cost")


def _shared_dimensions(key: tuple[Any, ...], dims: dict[tuple, Dimensions]) -> Dimensions:
    """One ``Dimensions`` per ``key`` (``_DIMENSIONS`` order) in ``dims``,
    shared by the charges that have them (a batch has few)."""
    if (shared := dims.get(key)) is None:
        shared = dims[key] = Dimensions(*key)
    return shared


def after_commit_checks(
    org: Organization, inserted: list[LedgerRow], states: list[BudgetState]
) -> None:
    """Queue threshold evaluation for budgets in their alert zone, and the
    unpriced-usage notice, once the ingestion commits. Beat runs both as a
    safety net, so a broker hiccup here loses nothing."""
    hot = [
        str(s.budget.pk)
        for s in states
        if s.budget.thresholds and s.period.spent * 100 >= min(s.budget.thresholds) * s.budget.limit
    ]
    unpriced = any(not r["priced"] for r in inserted)
    if not hot and not unpriced:
        return

    def enqueue() -> None:
        from costs.tasks import unpriced_usage
        from quotas.tasks import evaluate_thresholds

        try:
            if hot:
                evaluate_thresholds.delay(str(org.pk), sorted(set(hot)))
            if unpriced:
                unpriced_usage.delay(str(org.pk))
        except Exception:  # noqa: BLE001 - beat evaluates again; never fail recorded usage
            logger.warning("could not queue post-ingest checks for %s", org.slug, exc_info=True)

    transaction.on_commit(enqueue)


class BudgetsOfRows:
    """The budgets a recorded row counts against, in the period it fell in (or,
    for a replay, the current one), from the ``states`` the recording read or
    wrote. Rows with the same dimensions falling in the same periods share the
    answer, so it is worked out once for each; which periods a moment falls in
    is worked out once per moment (a batch's events sent without a time share
    one)."""

    def __init__(self, states: list[BudgetState]) -> None:
        self._states = states
        self._spans = [(s.period.start, s.period.end) for s in states]
        self._memo: dict[tuple, list[BudgetState]] = {}
        self._inside: dict[datetime, tuple[bool, ...]] = {}
        # Only the dimensions some budget filters on tell rows apart (a
        # batch for a thousand profiles, none of them with a budget, has one
        # answer, not a thousand).
        looked = [c for c in _DIMENSIONS if any(getattr(s.budget, c) for s in states)]
        self._looks: Callable[[Mapping[str, Any]], object] = (
            operator.itemgetter(*looked) if looked else _nothing
        )

    def __call__(self, row: Mapping[str, Any]) -> list[BudgetState]:
        if not self._states:
            return []
        at = row["occurred_at"]
        inside = self._inside.get(at)
        if inside is None:
            inside = self._inside[at] = tuple(start <= at < end for start, end in self._spans)
        key = (self._looks(row), inside)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._choose(row_dimensions(row), inside)
        return list(found)

    def _choose(self, dims: Dimensions, contains: tuple[bool, ...]) -> list[BudgetState]:
        chosen: dict[object, BudgetState] = {}
        for state, inside in zip(self._states, contains, strict=True):
            if not budget_matches(state.budget, dims):
                continue
            if inside or state.budget.pk not in chosen:
                chosen[state.budget.pk] = state
        return sorted(chosen.values(), key=lambda s: s.budget.name)


def _nothing(row: object) -> None:
    return None
