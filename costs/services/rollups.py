"""The daily rollup, kept current by additive upserts in the ingestion's own
transaction (or, for a single event, its one statement)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from django.db import connection
from django.db.models import Q
from django.db.models.functions import Collate

from config.rows import FEW_ROWS, fetch, pg_array
from costs.models import COUNT_METERS, METERS, DailyUsage, UsageEvent

if TYPE_CHECKING:
    from django.db.models import Field

SUM_COLUMNS = ["events", "unpriced_events", *COUNT_METERS, "audio_seconds", "cost", "revenue"]
KEY_COLUMNS = ["organization_id", "day", "profile_id", "provider", "model", "operation"]

RollupKey = tuple[object, date, object | None, str, str, str]
# One event as the rollup sees it: (key as KEY_COLUMNS, priced, meters in METERS
# order, cost, revenue or None).
RollupRow = tuple[RollupKey, bool, Sequence[int | Decimal], Decimal, Decimal | None]

# Where each meter's sum sits in SUM_COLUMNS.
METER_AT = [SUM_COLUMNS.index(m) for m in METERS]


def _key(e: UsageEvent) -> RollupKey:
    return (e.organization_id, e.day, e.profile_id, e.provider, e.model, e.operation)


def _rows_of(events: Sequence[UsageEvent]) -> list[RollupRow]:
    return [(_key(e), e.priced, [getattr(e, m) for m in METERS], e.cost, e.revenue) for e in events]


def rollup_move(*, before: Sequence[UsageEvent], after: Sequence[UsageEvent]) -> None:
    """Take events' quantities as they were (``before``) off their rollup rows and
    add them as they are now (``after``, where a repriced event may have a new
    cost and a new model name): one pass over every row touched, in key order,
    as every rollup writer locks them. Two passes, one per side, could lock
    the rows out of that order and deadlock with a batch."""
    totals: dict[RollupKey, list[Decimal | int]] = {}
    _add_totals(totals, _rows_of(before), -1)
    _add_totals(totals, _rows_of(after), 1)
    _write_totals(totals)
    _delete_emptied([key for key, sums in totals.items() if sums[0] < 0])


def _delete_emptied(keys: Sequence[RollupKey]) -> None:
    """Delete the rows of ``keys`` that count no event any more (every event
    they had moved to another row): a row at zero would be a day, profile and
    model with no usage. The rows were just written by this transaction, so
    they are locked: an ingestion adding to one waits, then writes a new row."""
    for start in range(0, len(keys), 100):
        match = Q()
        for org, day, profile, provider, model, operation in keys[start : start + 100]:
            same_profile = Q(profile_id__isnull=True) if profile is None else Q(profile_id=profile)
            match |= same_profile & Q(
                organization_id=org, day=day, provider=provider, model=model, operation=operation
            )
        DailyUsage.objects.filter(match, events=0).delete()


def rollup_add_rows(*, rows: Iterable[RollupRow]) -> None:
    """Add events, given as plain values (see ``RollupRow``), to their rollup rows.

    Rows are pre-aggregated per key (one statement may not touch a row twice) and
    written in key order, so concurrent ingests never deadlock on rollup rows."""
    totals: dict[RollupKey, list[Decimal | int]] = {}
    _add_totals(totals, rows, 1)
    _write_totals(totals)


def rollup_add_sums(*, sums: Iterable[tuple[RollupKey, list[Decimal | int]]]) -> None:
    """``rollup_add_rows`` for events already summed per key (SUM_COLUMNS
    order; a key may come more than once)."""
    totals: dict[RollupKey, list[Decimal | int]] = {}
    for key, part in sums:
        _accumulate(totals, key, part)
    _write_totals(totals)


def _add_totals(
    totals: dict[RollupKey, list[Decimal | int]], rows: Iterable[RollupRow], sign: int
) -> None:
    for key, priced, meters, cost, revenue in rows:
        sums = _sums(priced, meters, cost, revenue)
        if sign != 1:
            sums = [sign * v for v in sums]
        _accumulate(totals, key, sums)


def _accumulate(
    totals: dict[RollupKey, list[Decimal | int]], key: RollupKey, sums: list[Decimal | int]
) -> None:
    acc = totals.get(key)
    totals[key] = sums if acc is None else list(map(operator.add, acc, sums))


def _write_totals(totals: dict[RollupKey, list[Decimal | int]]) -> None:
    """Upsert ``totals`` (additive) in key order: rows with a profile, then
    those without, each in key order."""
    if not totals:
        return
    ordered = sorted(
        totals.items(), key=lambda kv: tuple("" if v is None else str(v) for v in kv[0])
    )
    for with_profile in (True, False):
        part = [(k, acc) for k, acc in ordered if (k[2] is not None) == with_profile]
        if not part:
            continue
        if connection.vendor == "postgresql" and len(part) > FEW_ROWS:
            _upsert_arrays(part, with_profile)
            continue
        # A few rows (one event's), or SQLite: plain VALUES, which PostgreSQL
        # takes with less work than unpacking one-element arrays.
        for start in range(0, len(part), 500):
            _upsert(part[start : start + 500], with_profile)


def rollup_fold_profiles(*, profile_ids: Iterable[object]) -> None:
    """Move these profiles' rollup rows into their organization's rows without
    a profile, in the caller's transaction: deleting a profile leaves its
    events in the ledger without one (SET_NULL), and the rollups must keep
    equalling the ledger (the plain SET_NULL would also collide with the row
    of the same day, model and operation that has no profile)."""
    ids = list(profile_ids)
    if not ids:
        return
    # Locked in key order, as every rollup writer locks them, and read as
    # locked: an ingestion committing meanwhile is waited for and its
    # increment folded in, not deleted with the row.
    text_order = [Collate(c, "C") if connection.vendor == "postgresql" else c
                  for c in ("provider", "model", "operation")]  # fmt: skip
    locked = list(
        DailyUsage.objects.select_for_update()
        .filter(profile_id__in=ids)
        .order_by("organization_id", "day", "profile_id", *text_order)
        .values_list("pk", *KEY_COLUMNS, *SUM_COLUMNS)
    )
    totals: dict[RollupKey, list[Decimal | int]] = {}
    for _pk, *values in locked:
        org, day, _, provider, model, operation = values[: len(KEY_COLUMNS)]
        _accumulate(
            totals, (org, day, None, provider, model, operation), values[len(KEY_COLUMNS) :]
        )
    DailyUsage.objects.filter(pk__in=[row[0] for row in locked]).delete()
    _write_totals(totals)


def _sums(
    priced: bool, meters: Sequence[int | Decimal], cost: Decimal, revenue: Decimal | None
) -> list[Decimal | int]:
    """One event's contribution to its rollup row, in SUM_COLUMNS order."""
    sums: list[Decimal | int] = [0] * len(SUM_COLUMNS)
    sums[0] = 1
    sums[1] = 0 if priced else 1
    for at, quantity in zip(METER_AT, meters, strict=True):
        sums[at] = quantity
    sums[-2] = cost
    sums[-1] = revenue or 0
    return sums


@functools.cache
def rollup_add_inserted_sql(*, with_profile: bool, source: str) -> str:
    """PostgreSQL: ``rollup_add_rows`` for the ledger rows the caller's CTE
    ``source`` returns (``LEDGER_RETURNING``), as the body of another CTE of the
    same statement: each row's rollup is read off the row as recorded, so it
    takes no parameters and runs only for rows actually inserted. Returns a row
    when it wrote. ``with_profile`` says which rollup key the rows have (it
    picks the unique index to upsert on); the source gives at most one row."""
    sums = {c: f"s.{c}" for c in SUM_COLUMNS}
    sums |= {
        "events": "1",
        "unpriced_events": "CASE WHEN s.priced THEN 0 ELSE 1 END",
        "revenue": "coalesce(s.revenue, 0)",
    }
    exprs = [f"s.{c}" for c in _keys(with_profile)] + [sums[c] for c in SUM_COLUMNS]
    select = f"SELECT {', '.join(exprs)} FROM {source} s"  # noqa: S608 - our names
    return _upsert_from(with_profile, select) + " RETURNING 1"


# The ledger columns ``rollup_add_inserted_sql`` reads off its source.
LEDGER_RETURNING = [*KEY_COLUMNS, "priced", *METERS, "cost", "revenue"]


def _keys(with_profile: bool) -> list[str]:
    return KEY_COLUMNS if with_profile else [c for c in KEY_COLUMNS if c != "profile_id"]


def _key_values(key: RollupKey, with_profile: bool) -> tuple:
    """``key`` as ``_keys(with_profile)`` lists its columns."""
    return key if with_profile else key[:2] + key[3:]


def _types(with_profile: bool) -> list[str]:
    """The database types of the upsert's columns (keys, then sums)."""
    cols = _keys(with_profile) + SUM_COLUMNS
    # Every column is a concrete field with a database type; get_field's wider
    # return type also covers reverse relations and generic foreign keys.
    fields = [cast("Field[Any, Any]", DailyUsage._meta.get_field(c)) for c in cols]
    return [cast(str, f.db_type(connection)) for f in fields]


def _upsert_from(with_profile: bool, source: str) -> str:
    """The additive upsert of the rows ``source`` gives (keys, then sums)."""
    cols = _keys(with_profile) + SUM_COLUMNS
    return (
        f"INSERT INTO {DailyUsage._meta.db_table} ({', '.join(cols)}) {source}"  # noqa: S608
        + _conflict(with_profile)
    )


def _conflict(with_profile: bool) -> str:
    table = DailyUsage._meta.db_table
    predicate = "profile_id IS NOT NULL" if with_profile else "profile_id IS NULL"
    updates = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in SUM_COLUMNS)
    return (
        f" ON CONFLICT ({', '.join(_keys(with_profile))}) WHERE {predicate} DO UPDATE SET {updates}"
    )


def _upsert_arrays(part: list, with_profile: bool) -> None:
    """PostgreSQL: every row of ``part`` in one statement, a column per array, so
    the statement's text is the same whatever the number of rows."""
    keys = [_key_values(k, with_profile) for k, _ in part]
    columns = [list(c) for c in zip(*keys, strict=True)]
    columns += [[acc[i] for _, acc in part] for i in range(len(SUM_COLUMNS))]
    # Prepared: the same text for any number of rows.
    fetch(_upsert_sql(with_profile), [pg_array(c) for c in columns])


@functools.cache
def _upsert_sql(with_profile: bool) -> str:
    arrays = ", ".join(f"%s::{t}[]" for t in _types(with_profile))
    return _upsert_from(with_profile, f"SELECT * FROM unnest({arrays})")  # noqa: S608


def _upsert(chunk: list, with_profile: bool) -> None:
    placeholders = "(" + ", ".join(["%s"] * (len(_keys(with_profile)) + len(SUM_COLUMNS))) + ")"
    params: list[object] = []
    for key, acc in chunk:
        params.extend(_db_value(v) for v in _key_values(key, with_profile))
        params.extend(acc[i] for i in range(len(SUM_COLUMNS)))
    fetch(_upsert_from(with_profile, "VALUES " + ", ".join([placeholders] * len(chunk))), params)


def _db_value(value: object) -> object:
    # UUIDs go in as the backend stores them (SQLite keeps them as 32-char hex).
    if value is not None and hasattr(value, "hex") and connection.vendor == "sqlite":
        return value.hex
    return value
