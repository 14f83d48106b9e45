"""Pricing events that arrived before their model had a price."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction

from costs.models import UsageEvent
from costs.pricing.engine import METERS, price_usage
from costs.selectors.budget_spend import budget_amounts
from costs.selectors.catalog import model_resolve, price_book
from costs.services.rollups import rollup_move
from costs.services.usage_events import MAX_EVENT_COST
from profiles.models import Organization
from quotas.services import Charge, Dimensions, budget_charge

logger = logging.getLogger(__name__)

BATCH = 500


@dataclass
class RepriceStats:
    examined: int = 0
    repriced: int = 0


def usage_reprice(
    *, org: Organization | None = None, event_ids: list[object] | None = None
) -> RepriceStats:
    """Price unpriced events whose model now has a price in force at their
    ``occurred_at``, exactly once: each event is claimed with a row lock
    (``SKIP LOCKED``, so concurrent runs split the work) and changed only while
    still unpriced; its rollup row moves by the difference and its budgets are
    charged the new cost (or, where it moves to another model's name, moved
    from its old dimensions' budgets to its new ones), in the same transaction."""
    stats = RepriceStats()
    base = UsageEvent.objects.filter(priced=False)
    if org is not None:
        base = base.filter(organization=org)
    if event_ids is not None:
        base = base.filter(id__in=event_ids)
    last_id = None
    while True:  # keyset over id: events that cannot be priced yet are passed over
        with transaction.atomic():
            qs = base if last_id is None else base.filter(id__gt=last_id)
            batch = list(
                qs.select_related("organization")
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("id")[:BATCH]
            )
            if not batch:
                return stats
            last_id = batch[-1].id
            stats.examined += len(batch)
            stats.repriced += _reprice_batch(batch)


def _reprice_batch(events: list[UsageEvent]) -> int:
    by_org: dict[object, list[UsageEvent]] = {}
    for e in events:
        by_org.setdefault(e.organization_id, []).append(e)
    changed = 0
    # One organization after another, in id order: every run takes the rollup
    # rows and counters of two organizations in the same order, so two
    # concurrent runs never wait on each other crosswise.
    for _, group in sorted(by_org.items(), key=lambda item: str(item[0])):
        org = group[0].organization
        resolved = {
            e.pk: model_resolve(provider=e.provider, model=e.model_requested) for e in group
        }
        book = price_book(org=org, model_ids={r.id for r in resolved.values() if r})
        before: list[UsageEvent] = []
        after: list[UsageEvent] = []
        charges: list[Charge] = []
        for e in group:
            r = resolved[e.pk]
            price = book.at(r.id, e.occurred_at) if r else None
            if price is None:
                continue
            assert r is not None  # a price is only looked up for a resolved model
            result = price_usage(price.rates, {m: getattr(e, m) for m in METERS})
            if result.total > MAX_EVENT_COST:
                # What ingestion refuses (and past the ledger's column): it
                # stays unpriced, and the batch goes on with the others.
                logger.warning("event %s would price to %s; left unpriced", e.pk, result.total)
                continue
            old = UsageEvent(
                **{f.attname: getattr(e, f.attname) for f in UsageEvent._meta.concrete_fields}
            )
            e.priced, e.cost, e.price_id = True, result.total, price.id
            e.ai_model_id, e.model = r.id, r.slug
            e.cost_breakdown = {k: str(v) for k, v in result.lines.items()}
            before.append(old)
            after.append(e)
            # The event may move to another model (an alias resolves to its
            # model's name): the budgets of its old dimensions give back all it
            # counted there, those of its new ones count it anew. A budget
            # matching both keeps its counts and gains only the cost.
            meters = {m: getattr(e, m) for m in METERS}
            counted = budget_amounts(meters, old.cost)
            charges.append(
                Charge(
                    dims=Dimensions(old.profile_id, old.api_key_id, old.provider, old.model,
                                    old.operation),
                    occurred_at=e.occurred_at,
                    amounts={k: -v for k, v in counted.items()},
                )
            )  # fmt: skip
            charges.append(
                Charge(
                    dims=Dimensions(e.profile_id, e.api_key_id, e.provider, e.model, e.operation),
                    occurred_at=e.occurred_at,
                    amounts=budget_amounts(meters, e.cost),
                )
            )
        if not after:
            continue
        UsageEvent.objects.bulk_update(
            after, ["priced", "cost", "price", "ai_model", "model", "cost_breakdown"]
        )
        rollup_move(before=before, after=after)
        budget_charge(org=org, charges=charges)
        changed += len(after)
    return changed
