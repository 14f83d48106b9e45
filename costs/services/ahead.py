"""What a check or a few events need from the database before anything is
written, read in one statement: the prices of their models, the profiles they
name and every budget that may apply."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from config.rows import read_together
from costs.selectors.catalog import PriceBook, price_book_read
from profiles.models import Organization, Profile
from profiles.services import profiles_named_read
from quotas.services import BudgetState, Dimensions, budget_states_read


@dataclass
class Ahead:
    book: PriceBook
    profiles: dict[str, Profile]  # by external id
    states: list[BudgetState]  # read with open_missing=False


def read_ahead(
    *,
    org: Organization,
    at: datetime,
    model_ids: Iterable[int],
    profile_names: Iterable[str],
    dims: Iterable[Dimensions],
) -> Ahead:
    """The prices of ``model_ids`` (none: an empty book, not read), the
    profiles named ``profile_names`` and every active budget that may match one
    of ``dims`` with its period at ``at``. The profiles go by name (they may
    not be looked up, or created, yet): their budgets match as if their ids
    were in ``dims``."""
    names = sorted(set(profile_names))
    book, profiles, states = read_together(
        price_book_read(org=org, model_ids=model_ids),
        profiles_named_read(org=org, names=names),
        budget_states_read(org, at, open_missing=False, matching=dims, profile_names=names),
    )
    return Ahead(book, profiles, states)
