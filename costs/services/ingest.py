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

import functools
import logging
import operator
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from config.ids import uuid7s
from config.rows import FEW_ROWS, fetch, pg_array
from costs.models import UsageEvent
from costs.pricing.engine import METERS, price_usage
from costs.selectors.budget_spend import budget_amounts
from costs.selectors.catalog import (
    PriceBook,
    ResolvedModel,
    model_name,
    model_resolve,
    price_book,
)
from costs.services.ahead import Ahead, read_ahead
from costs.services.rollups import (
    LEDGER_RETURNING,
    RollupRow,
    rollup_add_inserted_sql,
    rollup_add_rows,
)
from profiles.models import ApiKey, Organization, Profile
from profiles.services import profile_vanished, profiles_named
from quotas.services import (
    BudgetState,
    Charge,
    Dimensions,
    budget_charge_apply,
    budget_charge_inline,
    budget_charge_plan,
    budget_matches,
    budget_states_now,
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
                connection.alias, None, [self.values[c] for c in _COLUMNS]
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


def _price_event(
    ev: EventInput, org: Organization, book: PriceBook, resolved: ResolvedModel | None
) -> tuple[str, int | None, object | None, Decimal, dict[str, str], bool]:
    """(model shown, ai_model id, price id, cost, breakdown, priced) for one event."""
    shown = model_name(resolved, ev.model)
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


def _profiles(
    org: Organization, named: dict[str, str], found: dict[str, Profile] | None = None
) -> dict[str, Profile]:
    """Profiles by external id for ``named`` (idempotency key -> profile name),
    given those ``found`` already if the caller read them. Profiles are created
    only for keys not recorded yet, so a replay or a refused conflicting reuse
    never leaves a new profile behind."""
    names = set(named.values())
    if not names:
        return {}
    if found is None:
        found = profiles_named(org=org, names=names)
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
        found = profiles_named(org=org, names=names)
    return found


_NO_METERS = dict.fromkeys(METERS, 0)

# The ledger's columns, in table order: a row to record is a dict by these names.
_FIELDS = UsageEvent._meta.concrete_fields
_COLUMNS = [f.attname for f in _FIELDS]


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
    profile named by a write and not found is created, as for a new name."""
    try:
        return _usage_record(org, events, api_key, org_fresh)
    except IntegrityError as exc:
        if connection.in_atomic_block or not profile_vanished(exc):
            raise
        logger.info("a profile named by usage for %s was deleted meanwhile; again", org.slug)
        return _usage_record(org, events, api_key, org_fresh=False)


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
    candidates: dict[str, dict[str, object]] = {}
    for ev in events:
        if ev.idempotency_key in firsts:
            continue
        firsts[ev.idempotency_key] = ev
        shown, ai_model_id, price_id, cost, breakdown, priced = _price_event(
            ev, org, book, resolved[ev.provider, ev.model]
        )
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
    named = {k: firsts[k].profile for k in candidates if firsts[k].profile}
    written = None
    if ahead is not None and len(ordered) == 1 and ordered[0]["reservation_id"] is None:
        written = _record_one(org, ordered[0], named, shared, ahead)
    if written is None and ahead is not None and not ahead.counted:
        # The transaction reports budgets from the states it is handed.
        ahead = _read_ahead(org, events, resolved, model_ids, api_key_id, now)
    if written is None:
        with transaction.atomic():
            written = _record(org, ordered, named, shared, ahead, bound_profile_id)
    profiles, inserted, states = written
    existing = _recorded_before(org, ordered, inserted, rejected, now, states)

    # The instances each recorded row's relations are, one mapping per profile.
    related = {None: {"organization": org, "api_key": api_key, "profile": None}}
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
    budgets_of = _StatesFor(states)
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


Written = tuple[dict[str, Profile], list[dict[str, object]], list[BudgetState]]


def _recorded_before(
    org: Organization,
    rows: list[dict[str, object]],
    inserted: list[dict[str, object]],
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
        ).values(*_COLUMNS)
    }
    if existing:
        replayed = {Dimensions(*_dims_key(r.values)) for r in existing.values()}
        states += budget_states_now(org, now, open_missing=False, matching=replayed)
    return existing


def _with_profiles(
    org: Organization,
    rows: list[dict[str, object]],
    named: dict[str, str],
    found: dict[str, Profile] | None = None,
) -> dict[str, Profile]:
    profiles = _profiles(org, named, found)
    for row in rows:
        if (profile := profiles.get(named.get(row["idempotency_key"], ""))) is not None:
            row["profile_id"] = profile.pk
    return profiles


def _record(
    org: Organization,
    rows: list[dict[str, object]],
    named: dict[str, str],
    shared: dict[str, object],
    ahead: Ahead | None = None,
    bound_profile_id: object | None = None,
) -> Written:
    """In the caller's transaction: the rows not recorded yet, their rollups and
    their budget charges. (profiles, rows inserted, budget states). ``ahead``:
    the profiles and budgets, if read already; ``bound_profile_id``: the
    profile the recording key is bound to (it settles only that profile's
    reservations)."""
    profiles = _with_profiles(org, rows, named, ahead.profiles if ahead else None)
    inserted_ids = _insert_events(rows, shared=shared)
    inserted = [r for r in rows if r["id"] in inserted_ids]
    states: list[BudgetState] = []
    if inserted:
        # Every read and sum first; then the two statements that lock shared
        # rows (rollups, budget counters) back to back, just before COMMIT.
        dims: dict[tuple, Dimensions] = {}
        plan = budget_charge_plan(
            org=org,
            charges=[_charge(r, dims) for r in inserted],
            states=ahead.states if ahead else None,
            settle_profile_id=bound_profile_id,
        )
        rollup_add_rows(rows=[_rollup_row(r) for r in inserted])
        states = budget_charge_apply(plan)
        _after_commit_checks(org, inserted, states)
    return profiles, inserted, states


def _read_ahead(
    org: Organization,
    events: Sequence[EventInput],
    resolved: Mapping[tuple[str, str], ResolvedModel | None],
    model_ids: set[int],
    api_key_id: object,
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
    row: dict[str, object],
    named: dict[str, str],
    shared: dict[str, object],
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
    profiles = _with_profiles(org, [row], named, ahead.profiles)
    plan = budget_charge_plan(org=org, charges=[_charge(row, {})], states=ahead.states)
    charge = budget_charge_inline(plan, gate="EXISTS (SELECT 1 FROM roll)")
    if charge is None:
        return None
    ledger = _insert_one_sql()
    rollup = rollup_add_inserted_sql(with_profile=row["profile_id"] is not None, source="ins")
    params = _values_params([row])
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
    _after_commit_checks(org, [row], states)
    return profiles, [row], states


def _insert_events(rows: list[dict[str, object]], shared: dict[str, object]) -> set[uuid.UUID]:
    """Insert the rows, skipping keys already recorded; return the ids inserted.
    ``shared`` holds the columns (``_SHARED``) every row has the same value in.

    On PostgreSQL one ``INSERT ... SELECT FROM unnest(<one array per column>)
    ON CONFLICT DO NOTHING RETURNING id`` does it in a single round trip without
    building a model statement per row (the ORM's bulk_create spent half of a
    1,000-event batch there); the shared columns go once, not as arrays. Rows
    go in the given (key) order."""
    if not rows:
        return set()
    if connection.vendor != "postgresql":
        UsageEvent.objects.bulk_create(
            [UsageEvent(**row) for row in rows], ignore_conflicts=True, batch_size=500
        )
        ids = [row["id"] for row in rows]
        return set(UsageEvent.objects.filter(id__in=ids).values_list("id", flat=True))
    if len(rows) <= FEW_ROWS:
        # A few rows: plain VALUES (see FEW_ROWS).
        return {row[0] for row in fetch(_insert_values_sql(len(rows)), _values_params(rows))}
    # Each column goes as one array literal in PostgreSQL's text form, built
    # here a column at a time: adapting 32,000 values one by one cost more
    # than the INSERT itself.
    params = [shared[c] for c in _SHARED] + [
        pg_array([orjson.dumps(row[c]).decode() for row in rows])
        if c in _JSON_COLUMNS
        else pg_array([row[c] for row in rows])
        for c in _COLUMNS
        if c not in _SHARED
    ]
    # Server-side binding: the arrays travel as parameters, and the statement,
    # the same text whatever the batch size, is prepared once per connection.
    return {row[0] for row in fetch(_insert_sql(), params)}


_JSON_COLUMNS = {f.attname for f in _FIELDS if isinstance(f, models.JSONField)}
# Columns a request's rows all share (see usage_record), in table order.
_SHARED = [c for c in _COLUMNS if c in {"organization_id", "api_key_id", "received_at"}]


def _values_params(rows: list[dict[str, object]]) -> list[object]:
    """The parameters of ``_insert_values_sql(len(rows))``, row after row."""
    return [Jsonb(row[c]) if c in _JSON_COLUMNS else row[c] for row in rows for c in _COLUMNS]


@functools.cache
def _insert_values_sql(count: int) -> str:
    return _insert_from(f"VALUES {', '.join([_one_row()] * count)}")


@functools.cache
def _insert_one_sql() -> str:
    """One row, returning what its rollup is made of (``_record_one``)."""
    return _insert_from(f"VALUES {_one_row()}", returning=["id", *LEDGER_RETURNING])


def _one_row() -> str:
    return "(" + ", ".join(f"%s::{f.db_type(connection)}" for f in _FIELDS) + ")"


@functools.cache
def _insert_sql() -> str:
    varying = [f for f in _FIELDS if f.attname not in _SHARED]
    # The shared values first: their placeholders come first in the text.
    select = ", ".join(
        f"%s::{f.db_type(connection)}" if f.attname in _SHARED else f"u.c{varying.index(f)}"
        for f in _FIELDS
    )
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in varying)
    names = ", ".join(f"c{i}" for i in range(len(varying)))
    return _insert_from(f"SELECT {select} FROM unnest({arrays}) AS u({names})")  # noqa: S608


def _insert_from(source: str, returning: Sequence[str] = ("id",)) -> str:
    """The ledger INSERT of the rows ``source`` gives, skipping recorded keys."""
    columns = ", ".join(connection.ops.quote_name(f.column) for f in _FIELDS)
    return (
        f"INSERT INTO {UsageEvent._meta.db_table} ({columns}) {source} "  # noqa: S608 - our names
        f"ON CONFLICT (organization_id, idempotency_key) DO NOTHING RETURNING {', '.join(returning)}"
    )


def _rollup_row(row: dict[str, object]) -> RollupRow:
    return (
        (
            row["organization_id"],
            row["day"],
            row["profile_id"],
            row["provider"],
            row["model"],
            row["operation"],
        ),
        row["priced"],
        [row[m] for m in METERS],
        row["cost"],
        row["revenue"],
    )


def _after_commit_checks(
    org: Organization, inserted: list[dict[str, object]], states: list[BudgetState]
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


class _StatesFor:
    """The budgets an event counts against, in the period it fell in (or, for a
    replay, the current one). Events with the same dimensions falling in the
    same periods share the answer, so it is worked out once for each; which
    periods a moment falls in is worked out once per moment (a batch's
    events sent without a time share one)."""

    def __init__(self, states: list[BudgetState]) -> None:
        self._states = states
        self._spans = [(s.period.start, s.period.end) for s in states]
        self._memo: dict[tuple, list[BudgetState]] = {}
        self._inside: dict[datetime, tuple[bool, ...]] = {}
        # Only the dimensions some budget filters on tell events apart (a
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
            found = self._memo[key] = self._choose(_dims_key(row), inside)
        return list(found)

    def _choose(self, dims: tuple, contains: tuple[bool, ...]) -> list[BudgetState]:
        chosen: dict[object, BudgetState] = {}
        for state, inside in zip(self._states, contains, strict=True):
            if not budget_matches(state.budget, Dimensions(*dims)):
                continue
            if inside or state.budget.pk not in chosen:
                chosen[state.budget.pk] = state
        return sorted(chosen.values(), key=lambda s: s.budget.name)


# What a budget's filters look at in a ledger row, in ``Dimensions`` order.
_DIMENSIONS = ("profile_id", "api_key_id", "provider", "model", "operation")
_dims_key = operator.itemgetter(*_DIMENSIONS)


def _nothing(row: object) -> None:
    return None


def _charge(row: dict[str, object], dims: dict[tuple, Dimensions]) -> Charge:
    key = _dims_key(row)
    if (shared := dims.get(key)) is None:
        shared = dims[key] = Dimensions(*key)  # type: ignore[arg-type]
    return Charge(
        dims=shared,
        occurred_at=row["occurred_at"],  # type: ignore[arg-type]
        amounts=budget_amounts({m: row[m] for m in METERS}, row["cost"]),  # type: ignore[arg-type]
        reservation_id=row["reservation_id"],  # type: ignore[arg-type]
    )
