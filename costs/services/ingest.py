"""Recording usage: price -> ledger -> rollups -> budget charges, in one transaction.

Guarantees:
- each (organization, idempotency_key) is recorded once; a replay with the same
  body answers with the recorded event (200), a different body is refused (409),
  also when both arrive at the same moment (the unique index decides, and the
  loser reads the winner's committed row);
- the event rows, their rollups and the budget charges commit together or not
  at all (a batch in one transaction; a single event, the common call, in one
  statement, see ``_record_one``);
- usage is never refused for being over budget, nor for having no price (it is
  recorded unpriced at cost 0, to be repriced later).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.ids import uuid7s
from config.rows import FEW_ROWS, fetch
from costs.models import AIModel, Price, UsageEvent
from costs.pricing.engine import METERS
from costs.selectors.catalog import (
    ResolvedModel,
    catalog_cache_clear,
    model_name,
    model_resolve,
    price_book,
)
from costs.services.ahead import Ahead, read_ahead
from costs.services.ledger import (
    LEDGER_COLUMNS,
    LedgerRow,
    ledger_insert,
    ledger_insert_grouped,
    ledger_insert_one_sql,
    ledger_keys_now,
    ledger_recorded,
    ledger_rollup_row,
    ledger_values_params,
)
from costs.services.profiles import usage_profiles_bind
from costs.services.rollups import rollup_add_inserted_sql, rollup_add_rows, rollup_add_sums
from costs.services.usage_budgets import (
    BudgetsOfRows,
    after_commit_checks,
    group_charge,
    row_dimensions,
    usage_charge,
)
from costs.services.usage_events import (
    MAX_EVENT_COST,
    EventInput,
    EventResult,
    Recorded,
    UsageNeeded,
    event_price,
)
from profiles.models import ApiKey, Organization, Profile
from profiles.services import (
    CredentialsVanished,
    credentials_vanished,
    organization_gate_share,
    profile_vanished,
    row_vanished,
)
from quotas.services import (
    BudgetState,
    Dimensions,
    budget_charge_apply,
    budget_charge_inline,
    budget_charge_plan,
    budget_states_now,
)

logger = logging.getLogger(__name__)

_NO_METERS = dict.fromkeys(METERS, 0)


def usage_record(
    *,
    org: Organization,
    events: Sequence[EventInput],
    api_key: ApiKey | None = None,
    org_fresh: bool = False,
) -> list[EventResult]:
    """Record ``events`` for ``org``; results in input order (see module contract).
    ``org_fresh``: ``org`` was read from the database in this request (the
    key lookup), so its setup version may be trusted (``read_ahead``).

    A profile the events name may be deleted (``profiles_delete``) after it
    was looked up and before the events' rows commit: their foreign key
    refuses them and nothing is written. Outside a caller's transaction the
    events are then recorded once more, looking the profile up again: a
    profile named by a write and not found is created, as for a new name.
    The same for a price or model deleted after the events were priced with
    it (an unused override deleted in the admin as its first use arrives):
    they are priced again from the catalog as it stands. The key (or its
    organization) deleted meanwhile refuses them the same way:
    ``CredentialsVanished``, with nothing written.

    A large batch waits at its organization's gate for a change of the
    organization's setup in progress; when that change was a new time zone,
    the rows, reckoned in the old one, are reckoned again in the new one
    (their days, and the periods they are charged to)."""
    try:
        return _usage_record(org, events, api_key, org_fresh)
    except _ZoneChanged:
        return _in_the_new_zone(org, events, api_key)
    except IntegrityError as exc:
        if credentials_vanished(exc):
            raise CredentialsVanished(str(exc)) from exc
        catalog = _catalog_vanished(exc)
        if connection.in_atomic_block or not (catalog or profile_vanished(exc)):
            raise
        if catalog:
            catalog_cache_clear()  # this process may still resolve names to a deleted model
        logger.info("a row named by usage for %s was deleted meanwhile; again", org.slug)
        try:
            return _usage_record(org, events, api_key, org_fresh=False)
        except _ZoneChanged:
            return _in_the_new_zone(org, events, api_key)


def _in_the_new_zone(
    org: Organization, events: Sequence[EventInput], api_key: ApiKey | None
) -> list[EventResult]:
    """``usage_record`` again, with the organization as it stands: its days
    and periods were reckoned in the zone a change has just replaced."""
    fresh = Organization.objects.filter(pk=org.pk).first()
    if fresh is None:
        raise CredentialsVanished(f"organization {org.pk} deleted meanwhile")
    logger.info("%s changed time zone as a batch waited for it; again", org.slug)
    return usage_record(org=fresh, events=events, api_key=api_key)


class _ZoneChanged(Exception):
    """The organization's time zone changed after the request read it."""


def _zone_now(org: Organization) -> str | None:
    """The organization's time zone as committed now (None: it is gone)."""
    rows = fetch(
        f"SELECT timezone FROM {Organization._meta.db_table} WHERE id = %s",  # noqa: S608 - ours
        [org.pk],
    )
    return rows[0][0] if rows else None


def _catalog_vanished(exc: IntegrityError) -> bool:
    return row_vanished(exc, Price, "price_id") or row_vanished(exc, AIModel, "ai_model_id")


def _usage_record(
    org: Organization, events: Sequence[EventInput], api_key: ApiKey | None, org_fresh: bool
) -> list[EventResult]:
    now = timezone.now()
    tz = org.tz
    api_key_id = api_key.pk if api_key is not None else None
    # A key bound to a profile acts only for it: it settles only its reservations.
    bound_profile_id = api_key.profile_id if api_key is not None else None
    # A batch names a handful of models: resolve each name once.
    resolved: dict[tuple[str, str], ResolvedModel | None] = {}
    for e in events:
        if (e.provider, e.model) not in resolved:
            resolved[e.provider, e.model] = model_resolve(provider=e.provider, model=e.model)
    model_ids = {r.id for r in resolved.values() if r is not None}
    ahead: Ahead | None = None
    if len(events) <= FEW_ROWS and connection.vendor == "postgresql":
        # A single event or a few: their prices, profiles and budgets in one
        # round trip (a large batch reads them apart: the combined read
        # compares each read's rows with the others').
        # A single event records in one statement, which reads the counters
        # it reports as it writes: the rest may come from the setup memo.
        single = len(events) == 1 and events[0].reservation_id is None
        ahead = _read_ahead(
            org, events, resolved, model_ids, api_key_id, now, uncounted=org_fresh and single
        )
        book = ahead.book
    else:
        book = price_book(org=org, model_ids=model_ids)

    # The first event of a key in the request is the candidate; later ones are
    # judged against whatever ends up recorded for that key.
    ids = uuid7s(len(events))
    firsts: dict[str, EventInput] = {}
    rejected: dict[str, dict[str, str]] = {}
    candidates: dict[str, LedgerRow] = {}
    for ev in events:
        if ev.idempotency_key in firsts:
            continue
        firsts[ev.idempotency_key] = ev
        try:
            shown, ai_model_id, price_id, cost, breakdown, priced = event_price(
                ev, org, book, resolved[ev.provider, ev.model]
            )
        except UsageNeeded as exc:
            rejected[ev.idempotency_key] = exc.details
            continue
        if cost > MAX_EVENT_COST:
            rejected[ev.idempotency_key] = {
                "usage" if ev.cost is None else "cost": f"Prices to more than {MAX_EVENT_COST}."
            }
            continue
        usage = ev.usage
        candidates[ev.idempotency_key] = {
            "id": next(ids),
            "organization_id": org.pk,
            "profile_id": None,  # set below, once profiles are looked up
            "api_key_id": api_key_id,
            "idempotency_key": ev.idempotency_key,
            "request_hash": ev.request_hash,
            "provider": ev.provider,
            "model": shown,
            "model_requested": ev.model,
            "ai_model_id": ai_model_id,
            "operation": ev.operation,
            **_NO_METERS,
            **usage,  # normalised: meters only
            "cost": cost,
            "cost_breakdown": breakdown,
            "client_cost": ev.cost,
            "revenue": ev.revenue,
            "price_id": price_id,
            "priced": priced,
            "reservation_id": ev.reservation_id,
            "tags": ev.tags,
            "occurred_at": ev.occurred_at,
            "received_at": now,
            "day": ev.occurred_at.astimezone(tz).date(),
        }

    # Sorted by key so two requests sharing keys lock index entries in one order.
    ordered = [candidates[k] for k in sorted(candidates)]
    shared = {"organization_id": org.pk, "api_key_id": api_key_id, "received_at": now}
    named = {k: name for k in candidates if (name := firsts[k].profile)}
    written = None
    if ahead is not None and len(ordered) == 1 and ordered[0]["reservation_id"] is None:
        written = _record_one(org, ordered[0], named, shared, ahead)
    if written is None and ahead is not None and not ahead.counted:
        # The transaction reports budgets from the states it is handed.
        ahead = _read_ahead(org, events, resolved, model_ids, api_key_id, now)
    if written is None:
        outermost = not connection.in_atomic_block
        with transaction.atomic():
            if outermost and len(ordered) > FEW_ROWS and connection.vendor == "postgresql":
                # A large batch checks its rows' parents as it inserts them
                # (``ledger_keys_now``), inside its organization's gate.
                organization_gate_share(org.pk)
                if _zone_now(org) != org.timezone:
                    raise _ZoneChanged
                ledger_keys_now()
            written = _record(org, ordered, named, shared, ahead, bound_profile_id)
    profiles, inserted, states = written
    existing = _recorded_before(org, ordered, inserted, rejected, now, states)

    # The instances each recorded row's relations are, one mapping per profile.
    related: dict[object, dict[str, object]] = {
        None: {"organization": org, "api_key": api_key, "profile": None}
    }
    for p in profiles.values():
        related[p.pk] = {"organization": org, "api_key": api_key, "profile": p}
    recorded = {
        r["idempotency_key"]: Recorded(r, related.get(r["profile_id"], related[None]))
        for r in inserted
    }
    new_keys = set(recorded)
    recorded |= existing
    results: list[EventResult] = []
    first_seen: set[str] = set()
    budgets_of = BudgetsOfRows(states)
    for ev in events:
        row = recorded.get(ev.idempotency_key)
        if row is None:  # refused before it could be recorded, and never recorded before
            results.append(EventResult(400, None, error=rejected[ev.idempotency_key]))
            continue
        if ev.request_hash != row.values["request_hash"]:
            results.append(EventResult(409, row))
            continue
        status = (
            201 if ev.idempotency_key in new_keys and ev.idempotency_key not in first_seen else 200
        )
        first_seen.add(ev.idempotency_key)
        results.append(EventResult(status, row, budgets_of(row.values)))
    return results


Written = tuple[dict[str, Profile], list[LedgerRow], list[BudgetState]]


def _recorded_before(
    org: Organization,
    rows: list[LedgerRow],
    inserted: list[LedgerRow],
    rejected: dict[str, dict[str, str]],
    now: datetime,
    states: list[BudgetState],
) -> dict[str, Recorded]:
    """The ledger rows already recorded under the keys that were not inserted
    (replays, reuses, refused events sent before), by key; their budgets, as
    they stand now, join ``states``."""
    inserted_ids = {r["id"] for r in inserted}
    missing_keys = [r["idempotency_key"] for r in rows if r["id"] not in inserted_ids]
    if not missing_keys and not rejected:
        return {}
    existing = {
        values["idempotency_key"]: Recorded(values)
        for values in UsageEvent.objects.filter(
            organization=org, idempotency_key__in=[*missing_keys, *rejected]
        ).values(*LEDGER_COLUMNS)
    }
    if existing:
        replayed = {row_dimensions(r.values) for r in existing.values()}
        states += budget_states_now(org, now, open_missing=False, matching=replayed)
    return existing


def _record(
    org: Organization,
    rows: list[LedgerRow],
    named: dict[str, str],
    shared: Mapping[str, object],
    ahead: Ahead | None = None,
    bound_profile_id: uuid.UUID | None = None,
) -> Written:
    """In the caller's transaction: the rows not recorded yet, their rollups and
    their budget charges. (profiles, rows inserted, budget states). ``ahead``:
    the profiles and budgets, if read already; ``bound_profile_id``: the
    profile the recording key is bound to (it settles only that profile's
    reservations)."""
    profiles = usage_profiles_bind(
        org=org, rows=rows, named=named, found=ahead.profiles if ahead else None
    )
    dims: dict[tuple, Dimensions] = {}
    if len(rows) > FEW_ROWS and connection.vendor == "postgresql":
        # The database sums what the rows add to rollups and budgets as it
        # inserts them.
        groups = ledger_insert_grouped(rows, shared=shared)
        count = sum(g.sums[0] for g in groups)
        inserted = rows if count == len(rows) else ledger_recorded(rows) if count else []
        charges = [group_charge(g, shared["api_key_id"], dims) for g in groups]
        sums = [(g.key, g.sums) for g in groups]
    else:
        inserted_ids = ledger_insert(rows, shared=shared)
        inserted = [r for r in rows if r["id"] in inserted_ids]
        charges = [usage_charge(r, dims) for r in inserted]
        sums = None
    states: list[BudgetState] = []
    if inserted:
        # Every read and sum first; then the two statements that lock shared
        # rows (rollups, budget counters) back to back, just before COMMIT.
        plan = budget_charge_plan(
            org=org,
            charges=charges,
            states=ahead.states if ahead else None,
            settle_profile_id=bound_profile_id,
        )
        if sums is None:
            rollup_add_rows(rows=[ledger_rollup_row(r) for r in inserted])
        else:
            rollup_add_sums(sums=sums)
        states = budget_charge_apply(plan)
        after_commit_checks(org, inserted, states)
    return profiles, inserted, states


def _read_ahead(
    org: Organization,
    events: Sequence[EventInput],
    resolved: Mapping[tuple[str, str], ResolvedModel | None],
    model_ids: set[int],
    api_key_id: uuid.UUID | None,
    now: datetime,
    *,
    uncounted: bool = False,
) -> Ahead:
    """``read_ahead`` for these events (their profiles by name)."""
    dims = set()
    for e in events:
        shown = model_name(resolved[e.provider, e.model], e.model)
        dims.add(Dimensions(None, api_key_id, e.provider, shown, e.operation))
    return read_ahead(
        org=org,
        at=now,
        model_ids=model_ids,
        profile_names=[e.profile for e in events if e.profile],
        dims=dims,
        uncounted=uncounted,
    )


def _record_one(
    org: Organization,
    row: LedgerRow,
    named: dict[str, str],
    shared: Mapping[str, object],
    ahead: Ahead,
) -> Written | None:
    """One event on PostgreSQL: its ledger row, its rollup and its budget
    counters in a single statement, each written only if the ledger row is
    new. The statement is atomic by itself and, in autocommit (outside a
    caller's transaction), commits on its own, so it holds its row locks
    (ledger key, rollup row, counters, in the ingestion transaction's order)
    for no round trip at all, and the call takes four fewer round trips than
    the transaction (BEGIN, rollup, counters, COMMIT).

    Reads come first (``ahead``: prices, profile and budgets in one
    statement, or none when the setup memo holds them; the statement reads
    the counters it reports) and commit on their own: a profile named for the first
    time is created even if the row turns out to be a replay racing its
    original (a profile with no usage). None, with nothing written, when the
    charge needs the transaction (a period to open); an event settling a
    reservation never comes here."""
    profiles = usage_profiles_bind(org=org, rows=[row], named=named, found=ahead.profiles)
    plan = budget_charge_plan(org=org, charges=[usage_charge(row, {})], states=ahead.states)
    charge = budget_charge_inline(plan, gate="EXISTS (SELECT 1 FROM roll)")
    if charge is None:
        return None
    ledger = ledger_insert_one_sql()
    rollup = rollup_add_inserted_sql(with_profile=row["profile_id"] is not None, source="ins")
    params = ledger_values_params([row])
    if charge.ctes:
        sql = (
            f"WITH ins AS ({ledger}), roll AS ({rollup}), {charge.ctes} "  # noqa: S608 - ours
            "SELECT (SELECT id FROM ins), a.id, a.spent, a.reserved "
            "FROM (SELECT 1) AS one LEFT JOIN counters a ON true"
        )
        params += charge.params
    else:
        sql = f"WITH ins AS ({ledger}), roll AS ({rollup}) SELECT id FROM ins"  # noqa: S608
    rows = fetch(sql, params)
    if not rows or rows[0][0] is None:  # recorded already: a replay, or a reuse
        return profiles, [], []
    states = charge.states(r[1:] for r in rows if len(r) > 1 and r[1] is not None)
    after_commit_checks(org, [row], states)
    return profiles, [row], states
