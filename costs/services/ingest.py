"""Recording usage: price -> ledger -> rollups -> budget charges, in one transaction.

Guarantees:
- each (organization, idempotency_key) is recorded once; a replay with the same
  body answers with the recorded event (200), a different body is refused (409),
  also when both arrive at the same moment (the unique index decides, and the
  loser reads the winner's committed row);
- the event rows, their rollups and the budget charges commit together or not
  at all;
- usage is never refused for being over budget, nor for having no price (it is
  recorded unpriced at cost 0, to be repriced later).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import psycopg
from django.db import connection, models, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from costs.models import UsageEvent
from costs.pricing.engine import METERS, price_usage
from costs.selectors.budget_spend import budget_amounts
from costs.selectors.catalog import PriceBook, model_resolve, price_book
from costs.services.rollups import rollup_add
from profiles.models import ApiKey, Organization, Profile
from quotas.services import (
    BudgetState,
    Charge,
    Dimensions,
    active_budgets,
    budget_charge,
    budget_matches,
    current_states,
)

logger = logging.getLogger(__name__)

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


@dataclass
class EventResult:
    status: int  # 201 recorded, 200 replay, 409 conflicting reuse, 400 refused
    event: UsageEvent | None
    budgets: list[BudgetState] = field(default_factory=list)
    error: dict[str, str] | None = None


def _price_event(
    ev: EventInput, org: Organization, book: PriceBook
) -> tuple[str, int | None, object | None, Decimal, dict[str, str], bool]:
    """(model shown, ai_model id, price id, cost, breakdown, priced) for one event."""
    resolved = model_resolve(provider=ev.provider, model=ev.model)
    shown = resolved.slug if resolved else ev.model
    price = book.at(resolved.id, ev.occurred_at) if resolved else None
    if price is not None and not (ev.cost is not None and org.allow_client_pricing):
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


def _profiles(org: Organization, named: dict[str, str]) -> dict[str, Profile]:
    """Profiles by external id for ``named`` (idempotency key -> profile name).
    Profiles are created only for keys not recorded yet, so a replay or a
    refused conflicting reuse never leaves a new profile behind."""
    names = set(named.values())
    if not names:
        return {}
    found = {
        p.external_id: p for p in Profile.objects.filter(organization=org, external_id__in=names)
    }
    missing = names - found.keys()
    if missing:
        taken = set(
            UsageEvent.objects.filter(
                organization=org,
                idempotency_key__in=[k for k, n in named.items() if n in missing],
            ).values_list("idempotency_key", flat=True)
        )
        missing = {n for k, n in named.items() if n in missing and k not in taken}
    if missing:
        Profile.objects.bulk_create(
            [Profile(organization=org, external_id=n) for n in sorted(missing)],
            ignore_conflicts=True,  # another request may create the same profile now
        )
        found = {
            p.external_id: p
            for p in Profile.objects.filter(organization=org, external_id__in=names)
        }
    return found


def usage_record(
    *, org: Organization, events: Sequence[EventInput], api_key: ApiKey | None = None
) -> list[EventResult]:
    """Record ``events`` for ``org``; results in input order (see module contract)."""
    now = timezone.now()
    tz = org.tz
    resolved_ids = {
        r.id for e in events if (r := model_resolve(provider=e.provider, model=e.model)) is not None
    }
    book = price_book(org=org, model_ids=resolved_ids)

    # The first event of a key in the request is the candidate; later ones are
    # judged against whatever ends up recorded for that key.
    firsts: dict[str, EventInput] = {}
    rejected: dict[str, dict[str, str]] = {}
    candidates: dict[str, UsageEvent] = {}
    for ev in events:
        if ev.idempotency_key in firsts:
            continue
        firsts[ev.idempotency_key] = ev
        shown, ai_model_id, price_id, cost, breakdown, priced = _price_event(ev, org, book)
        if cost > MAX_EVENT_COST:
            rejected[ev.idempotency_key] = {
                "usage" if ev.cost is None else "cost": f"Prices to more than {MAX_EVENT_COST}."
            }
            continue
        candidates[ev.idempotency_key] = UsageEvent(
            id=uuid.uuid4(),
            organization=org,
            api_key=api_key,
            idempotency_key=ev.idempotency_key,
            request_hash=ev.request_hash,
            provider=ev.provider,
            model=shown,
            model_requested=ev.model,
            ai_model_id=ai_model_id,
            operation=ev.operation,
            **{m: ev.usage.get(m, 0) for m in METERS},
            cost=cost,
            cost_breakdown=breakdown,
            client_cost=ev.cost,
            revenue=ev.revenue,
            price_id=price_id,
            priced=priced,
            reservation_id=ev.reservation_id,
            tags=ev.tags,
            occurred_at=ev.occurred_at,
            received_at=now,
            day=ev.occurred_at.astimezone(tz).date(),
        )

    # Sorted by key so two requests sharing keys lock index entries in one order.
    ordered = sorted(candidates.values(), key=lambda e: e.idempotency_key)
    with transaction.atomic():
        profiles = _profiles(org, {k: firsts[k].profile for k in candidates if firsts[k].profile})
        for e in ordered:
            e.profile = profiles.get(firsts[e.idempotency_key].profile or "")
        inserted_ids = _insert_events(ordered)
        inserted = [e for e in ordered if e.id in inserted_ids]
        existing: dict[str, UsageEvent] = {}
        missing_keys = [e.idempotency_key for e in ordered if e.id not in inserted_ids]
        if missing_keys or rejected:
            existing = {
                e.idempotency_key: e
                for e in UsageEvent.objects.filter(
                    organization=org, idempotency_key__in=[*missing_keys, *rejected]
                )
            }
        states: list[BudgetState] = []
        if inserted:
            rollup_add(events=inserted)
            states = budget_charge(org=org, charges=[_charge(e) for e in inserted])
            _after_commit_checks(org, inserted, states)
        if existing and (budgets := active_budgets(org)):
            # Replays answer with the budgets as they stand now.
            states += current_states(org, budgets, now, open_missing=False)

    recorded = {e.idempotency_key: e for e in inserted} | existing
    new_keys = {e.idempotency_key for e in inserted}
    results: list[EventResult] = []
    first_seen: set[str] = set()
    for ev in events:
        row = recorded.get(ev.idempotency_key)
        if row is None:  # refused before it could be recorded, and never recorded before
            results.append(EventResult(400, None, error=rejected[ev.idempotency_key]))
            continue
        if ev.request_hash != row.request_hash:
            results.append(EventResult(409, row))
            continue
        status = (
            201 if ev.idempotency_key in new_keys and ev.idempotency_key not in first_seen else 200
        )
        first_seen.add(ev.idempotency_key)
        results.append(EventResult(status, row, _states_for(row, states)))
    return results


def _insert_events(events: list[UsageEvent]) -> set[uuid.UUID]:
    """Insert the events, skipping keys already recorded; return the ids inserted.

    On PostgreSQL one ``INSERT ... SELECT FROM unnest(<one array per column>)
    ON CONFLICT DO NOTHING RETURNING id`` does it in a single round trip without
    building a model statement per row (the ORM's bulk_create spent half of a
    1,000-event batch there). Rows go in the given (key) order."""
    if not events:
        return set()
    if connection.vendor != "postgresql":
        UsageEvent.objects.bulk_create(events, ignore_conflicts=True, batch_size=500)
        ids = [e.id for e in events]
        return set(UsageEvent.objects.filter(id__in=ids).values_list("id", flat=True))
    fields = UsageEvent._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
    # Values go to psycopg as they are (UUID, str, int, Decimal, aware datetime,
    # date, bool); only JSON needs wrapping. Field-by-field ORM preparation cost
    # more than the INSERT itself.
    params = [
        [Jsonb(getattr(e, f.attname)) for e in events]
        if isinstance(f, models.JSONField)
        else [getattr(e, f.attname) for e in events]
        for f in fields
    ]
    connection.ensure_connection()
    # A server-side-binding cursor: the arrays travel as parameters instead of
    # being quoted into the SQL text on the client.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f"INSERT INTO {UsageEvent._meta.db_table} ({columns}) "  # noqa: S608 - our names
            f"SELECT * FROM unnest({arrays}) "
            "ON CONFLICT (organization_id, idempotency_key) DO NOTHING RETURNING id",
            params,
        )
        return {row[0] for row in cursor.fetchall()}


def _after_commit_checks(
    org: Organization, inserted: list[UsageEvent], states: list[BudgetState]
) -> None:
    """Queue threshold evaluation for budgets in their alert zone, and the
    unpriced-usage notice, once the ingestion commits. Beat runs both as a
    safety net, so a broker hiccup here loses nothing."""
    hot = [
        str(s.budget.pk)
        for s in states
        if s.budget.thresholds and s.period.spent * 100 >= min(s.budget.thresholds) * s.budget.limit
    ]
    unpriced = any(not e.priced for e in inserted)
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


def _states_for(row: UsageEvent, states: list[BudgetState]) -> list[BudgetState]:
    """The budgets an event counts against, in the period it fell in (or, for a
    replay, the current one)."""
    if not states:
        return []
    dims = _dims(row)
    chosen: dict[object, BudgetState] = {}
    for state in states:
        if not budget_matches(state.budget, dims):
            continue
        contains = state.period.start <= row.occurred_at < state.period.end
        if contains or state.budget.pk not in chosen:
            chosen[state.budget.pk] = state
    return sorted(chosen.values(), key=lambda s: s.budget.name)


def _dims(e: UsageEvent) -> Dimensions:
    return Dimensions(e.profile_id, e.api_key_id, e.provider, e.model, e.operation)


def _charge(e: UsageEvent) -> Charge:
    return Charge(
        dims=_dims(e),
        occurred_at=e.occurred_at,
        amounts=budget_amounts({m: getattr(e, m) for m in METERS}, e.cost),
        reservation_id=e.reservation_id,
    )
