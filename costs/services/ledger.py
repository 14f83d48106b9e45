"""The ledger's INSERT statements: rows to record, as plain dicts by column,
written in one round trip whatever their number, skipping keys already
recorded (``usage_record`` decides what goes in; this writes it)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import orjson
from django.db import connection, models
from psycopg.types.json import Jsonb

from config.rows import FEW_ROWS, fetch, pg_array
from costs.models import UsageEvent
from costs.pricing.engine import COUNT_METERS, METERS
from costs.services.catalog import CATALOG_GATE
from costs.services.rollups import (
    KEY_COLUMNS,
    LEDGER_RETURNING,
    SUM_COLUMNS,
    RollupKey,
    RollupRow,
)

# One ledger row to record: its column values by attribute name (``LEDGER_COLUMNS``).
LedgerRow = dict[str, Any]

# The ledger's columns, in table order.
_FIELDS = UsageEvent._meta.concrete_fields
LEDGER_COLUMNS = [f.attname for f in _FIELDS]
_JSON_COLUMNS = {f.attname for f in _FIELDS if isinstance(f, models.JSONField)}
# Columns a request's rows all share (see ``ledger_insert``), in table order.
SHARED_COLUMNS = [
    c for c in LEDGER_COLUMNS if c in {"organization_id", "api_key_id", "received_at"}
]


def ledger_insert(rows: list[LedgerRow], shared: Mapping[str, object]) -> set[uuid.UUID]:
    """Insert the rows, skipping keys already recorded; return the ids inserted.
    ``shared`` holds the columns (``SHARED_COLUMNS``) every row has the same
    value in.

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
        return {row[0] for row in fetch(_insert_values_sql(len(rows)), ledger_values_params(rows))}
    return {row[0] for row in fetch(_insert_sql(), _array_params(rows, shared))}


class InsertedGroup(NamedTuple):
    """Rows just inserted that share a rollup key and a reservation."""

    key: RollupKey  # KEY_COLUMNS
    reservation_id: uuid.UUID | None
    sums: list[Decimal | int]  # SUM_COLUMNS: what the rows add to their rollup row
    requests: int  # each row counted as at least one request (``budget_amounts``)
    occurred_at: datetime  # the earliest


def ledger_insert_grouped(
    rows: list[LedgerRow], shared: Mapping[str, object]
) -> list[InsertedGroup]:
    """PostgreSQL, more than FEW_ROWS rows: ``ledger_insert``, answered with
    the rows actually inserted summed per rollup key and reservation, by the
    same statement, instead of their ids: what the rollups and budget
    counters add comes from a few hundred groups rather than a row at a time
    in Python, and no id is sent back. The groups' ``events`` (``sums[0]``)
    add up to the rows inserted: when that is fewer than ``rows``, some keys
    were recorded before (``ledger_recorded`` tells which rows went in)."""
    return [
        InsertedGroup(tuple(r[:_KEYS]), r[_KEYS], list(r[_KEYS + 1 : -2]), r[-2], r[-1])
        for r in fetch(_insert_grouped_sql(), _array_params(rows, shared))
    ]


_KEYS = len(KEY_COLUMNS)


def ledger_recorded(rows: list[LedgerRow]) -> list[LedgerRow]:
    """Those of ``rows`` that are in the ledger (by their ids: a row whose key
    was recorded before went in under another id), in the caller's transaction."""
    found = fetch(
        f"SELECT id FROM {UsageEvent._meta.db_table} WHERE id = ANY(%s::uuid[])",  # noqa: S608
        [pg_array([row["id"] for row in rows])],
    )
    ids = {r[0] for r in found}
    return [row for row in rows if row["id"] in ids]


def _array_params(rows: list[LedgerRow], shared: Mapping[str, object]) -> list[object]:
    """The parameters of ``_insert_sql()``: the shared values, then each
    other column as one array literal in PostgreSQL's text form, built here
    a column at a time (adapting 32,000 values one by one cost more than the
    INSERT itself). Server-side binding: the arrays travel as parameters, and
    the statement, the same text whatever the batch size, is prepared once
    per connection."""
    return [shared[c] for c in SHARED_COLUMNS] + [
        pg_array([orjson.dumps(row[c]).decode() for row in rows])
        if c in _JSON_COLUMNS
        else pg_array([row[c] for row in rows])
        for c in LEDGER_COLUMNS
        if c not in SHARED_COLUMNS
    ]


def ledger_keys_now() -> None:
    """In the caller's transaction, from here on: the ledger's foreign keys
    are checked as each INSERT ends, not at COMMIT. A 1,000-row batch's 5,000
    checks otherwise run while it holds its rollup rows and budget counters,
    which the organization's other batches wait for.

    The checks then lock the parents (FOR KEY SHARE) before those rows, and
    wait only for a parent's deletion or a change of its unique columns,
    which lock other rows first:
    - an organization's, profile's or key's come from changes to the
      organization's setup, which lock its rollups and counters first: the
      caller must hold the organization's gate
      (``profiles.services.organization_gate_share``), which those changes
      take for themselves before any lock;
    - a price's or model's hold nothing of a batch's, but a single event
      holding rollups may wait for them at its COMMIT: this takes the
      catalog's gate (``costs.services.catalog.catalog_gate_take``), shared,
      in the same round trip.
    PostgreSQL only."""
    names = ", ".join(connection.ops.quote_name(n) for n in _key_names())
    with connection.cursor() as cursor:
        # One round trip, no parameters: the gate's key is our constant.
        cursor.execute(
            f"SELECT pg_advisory_xact_lock_shared({int(CATALOG_GATE)}); "
            f"SET CONSTRAINTS {names} IMMEDIATE"
        )


@functools.cache
def _key_names() -> tuple[str, ...]:
    rows = fetch(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'"
        " ORDER BY conname",
        [UsageEvent._meta.db_table],
        prepare=False,
    )
    return tuple(r[0] for r in rows)


def ledger_values_params(rows: list[LedgerRow]) -> list[object]:
    """The parameters of ``_insert_values_sql(len(rows))`` (and of
    ``ledger_insert_one_sql()`` for one row), row after row."""
    return [Jsonb(row[c]) if c in _JSON_COLUMNS else row[c] for row in rows for c in LEDGER_COLUMNS]


@functools.cache
def ledger_insert_one_sql() -> str:
    """One row (``ledger_values_params``), returning what its rollup is made
    of (``LEDGER_RETURNING``), as the body of a CTE of a larger statement."""
    return _insert_from(f"VALUES {_one_row()}", returning=["id", *LEDGER_RETURNING])


def ledger_rollup_row(row: LedgerRow) -> RollupRow:
    """What ``rollup_add_rows`` adds for a recorded row."""
    key = (
        row["organization_id"],
        row["day"],
        row["profile_id"],
        row["provider"],
        row["model"],
        row["operation"],
    )
    return key, row["priced"], [row[m] for m in METERS], row["cost"], row["revenue"]


@functools.cache
def _insert_values_sql(count: int) -> str:
    return _insert_from(f"VALUES {', '.join([_one_row()] * count)}")


def _one_row() -> str:
    return "(" + ", ".join(f"%s::{_type(f)}" for f in _FIELDS) + ")"


def _type(field: models.Field) -> str:
    # The short name: the one-event statement must fit the parsed-statement cache.
    return str(field.db_type(connection)).replace("timestamp with time zone", "timestamptz")


@functools.cache
def _insert_sql() -> str:
    return _insert_from(_arrays_source())


def _arrays_source() -> str:
    """The rows of ``_array_params``, as the source of the INSERT."""
    varying = [f for f in _FIELDS if f.attname not in SHARED_COLUMNS]
    # The shared values first: their placeholders come first in the text.
    select = ", ".join(
        f"%s::{_type(f)}" if f.attname in SHARED_COLUMNS else f"u.c{varying.index(f)}"
        for f in _FIELDS
    )
    arrays = ", ".join(f"%s::{_type(f)}[]" for f in varying)
    names = ", ".join(f"c{i}" for i in range(len(varying)))
    return f"SELECT {select} FROM unnest({arrays}) AS u({names})"  # noqa: S608


@functools.cache
def _insert_grouped_sql() -> str:
    q = connection.ops.quote_name
    keys = ", ".join(q(c) for c in [*KEY_COLUMNS, "reservation_id"])
    sums = {
        "events": "count(*)",
        "unpriced_events": "count(*) FILTER (WHERE NOT priced)",
        "cost": "sum(cost)",
        "revenue": "coalesce(sum(revenue), 0)",
    }
    sums |= {m: f"sum({q(m)})::bigint" for m in COUNT_METERS}
    sums |= {m: f"sum({q(m)})" for m in METERS if m not in COUNT_METERS}
    insert = _insert_from(_arrays_source(), [*LEDGER_RETURNING, "reservation_id", "occurred_at"])
    return (
        f"WITH ins AS ({insert}) SELECT {keys}, {', '.join(sums[c] for c in SUM_COLUMNS)}, "  # noqa: S608
        f"sum(greatest(requests, 1))::bigint, min(occurred_at) FROM ins GROUP BY {keys}"
    )


def _insert_from(source: str, returning: Sequence[str] = ("id",)) -> str:
    """The ledger INSERT of the rows ``source`` gives, skipping recorded keys."""
    columns = ", ".join(connection.ops.quote_name(f.column) for f in _FIELDS)
    return (
        f"INSERT INTO {UsageEvent._meta.db_table} ({columns}) {source} "  # noqa: S608 - our names
        f"ON CONFLICT (organization_id, idempotency_key) DO NOTHING RETURNING {', '.join(returning)}"
    )
