"""What a check or a few events need from the database before anything is
written, read in one statement: the prices of their models, the profiles they
name and every budget that may apply.

A request whose organization row was read just now (the API's key lookup)
may find all of it but the budgets' counters in the organization's setup
memo (``profiles.setup``), kept per version of that setup, and then reads
nothing ahead: its own statement (a reservation, a single event's record)
reads the counters as it writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from config.rows import Read, read_together
from costs.selectors.catalog import PriceBook, price_book_known, price_book_learn, price_book_read
from profiles.models import Organization, Profile
from profiles.services import profiles_named_read
from profiles.setup import profiles_known, profiles_learn, setup_memo
from quotas.services import (
    BudgetState,
    Dimensions,
    budget_states_known,
    budget_states_learn,
    budget_states_read,
    budgets_learn,
    memo_budgets_read,
)


@dataclass
class Ahead:
    book: PriceBook
    profiles: dict[str, Profile]  # by external id
    states: list[BudgetState]  # read with open_missing=False
    # False: the states came from the setup memo, their counters unknown (None).
    counted: bool = True


def read_ahead(
    *,
    org: Organization,
    at: datetime,
    model_ids: Iterable[int],
    profile_names: Iterable[str],
    dims: Iterable[Dimensions],
    uncounted: bool = False,
) -> Ahead:
    """The prices of ``model_ids`` (none: an empty book, not read), the
    profiles named ``profile_names`` and every active budget that may match one
    of ``dims`` with its period at ``at``. The profiles go by name (they may
    not be looked up, or created, yet): their budgets match as if their ids
    were in ``dims``.

    ``uncounted``: the caller read ``org`` from the database in this request
    and needs no counters (its statement reads them): everything may come
    from the setup memo, with no read at all."""
    names = sorted(set(profile_names))
    model_ids = sorted(set(model_ids))
    dims = list(dims)
    memo = setup_memo(org) if uncounted else None
    if memo is not None:
        ahead = _known(memo, org, at, model_ids, names, dims)
        if ahead is not None:
            return ahead
    reads: list[Read[Any]] = [
        price_book_read(org=org, model_ids=model_ids),
        profiles_named_read(org=org, names=names),
        budget_states_read(org, at, open_missing=False, matching=dims, profile_names=names),
    ]
    if memo is not None and "budgets" not in memo:
        reads.append(memo_budgets_read(org))  # all of them, once per version
    book, profiles, states, *budgets = read_together(*reads)
    if memo is not None:
        price_book_learn(memo, model_ids, book)
        profiles_learn(memo, profiles)
        budget_states_learn(memo, states)
        if budgets:
            budgets_learn(memo, budgets[0])
    return Ahead(book, profiles, states)


def _known(
    memo: dict,
    org: Organization,
    at: datetime,
    model_ids: list[int],
    names: list[str],
    dims: list[Dimensions],
) -> Ahead | None:
    """``read_ahead`` from the setup memo alone; None unless it holds it all."""
    book = price_book_known(memo, model_ids)
    profiles = profiles_known(memo, names) if book is not None else None
    if book is None or profiles is None:
        return None
    if names:
        # The named profiles' budgets match as their ids.
        dims = [
            *dims,
            *(replace(d, profile_id=profiles[n].pk) for d in dims for n in names),
        ]
    states = budget_states_known(org, at, dims, memo)
    if states is None:
        return None
    return Ahead(book, profiles, states, counted=False)
