"""Hand-written SQL for the hot paths, and model instances from its rows.

The paths every request takes (key authentication, the pre-flight check and
its reservation, price lookups, the ledger insert, rollups and budget
counters) run a few small statements per request; building them through the
ORM cost more CPU than PostgreSQL spent answering them. They write their SQL
by hand and run it through ``fetch`` (server-side parameters, prepared once per
connection, inside Django's own cursor wrappers); ``RowReader`` turns rows back
into model instances with the per-field converters the ORM applies, so values
come out identical on PostgreSQL and SQLite (UUIDs, Decimals, JSON, aware
datetimes); ``pg_array`` sends a column of values as one array parameter.
A ``Read`` is a selector's SELECT with what to make of its rows, so that a
caller can send the independent reads a request needs in one statement
(``read_together``) instead of one round trip each.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar, cast

import orjson
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from psycopg.pq import ExecStatus

M = TypeVar("M", bound=models.Model)
T = TypeVar("T")
TUPLES_OK = ExecStatus.TUPLES_OK


class RowReader(Generic[M]):
    """Reads ``model``'s concrete fields from a slice of a result row.

    ``columns(alias)`` is the select list to put in the SQL, in the order
    ``read()`` expects them; ``width`` is how many values it takes."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.names = [f.attname for f in self.fields]
        self.width = len(self.fields)
        self._pk = self.names.index(model._meta.pk.attname)
        self._steps: list[Callable[[Any], Any]] | None = None  # one database per process
        self._columns: dict[str, str] = {}

    def columns(self, alias: str) -> str:
        text = self._columns.get(alias)
        if text is None:
            qn = connection.ops.quote_name
            text = self._columns[alias] = ", ".join(f"{alias}.{qn(f.column)}" for f in self.fields)
        return text

    def _converters(self) -> list[Callable[[Any], Any]]:
        if self._steps is None:
            self._steps = [self._converter(f) for f in self.fields]
        return self._steps

    @staticmethod
    def _converter(field: models.Field) -> Callable[[Any], Any]:
        col = field.get_col(field.model._meta.db_table)
        # Field.get_db_converters() exists at runtime; django-stubs only declare it on
        # expressions.
        field_steps = field.get_db_converters(connection)  # type: ignore[attr-defined]
        chain = connection.ops.get_db_converters(col) + field_steps
        if not chain:
            return lambda value: value

        def convert(value: Any) -> Any:
            for step in chain:
                value = step(value, col, connection)
            return value

        return convert

    def read(self, row: Sequence[Any], offset: int = 0) -> M | None:
        """The instance in ``row[offset:offset + width]``; None when its primary
        key is NULL (the missing side of an outer join)."""
        values = row[offset : offset + self.width]
        if values[self._pk] is None:
            return None
        converted = [c(v) for c, v in zip(self._converters(), values, strict=True)]
        return self.model.from_db(DEFAULT_DB_ALIAS, self.names, converted)


def fetch(sql: str, params: Sequence[Any], *, prepare: bool = True) -> list[tuple[Any, ...]]:
    """Run one hand-written statement and return its rows.

    On PostgreSQL the parameters travel apart from the SQL text (server-side
    binding) and the statement is prepared once per connection, on a generic
    plan (unless DB_PREPARE_HOT_QUERIES is off, for a pooler that cannot keep
    prepared statements): the server stops parsing and planning it on every
    call. Otherwise it runs exactly as Django's own cursors run statements:
    health check, broken-transaction check, execute wrappers, error
    translation, query log. ``prepare=False``, for a read whose best plan
    depends on its values (a LIMIT, one tenant's share of a table): it runs
    as Django runs its own queries, the values in the text, planned for them
    each time."""
    if connection.vendor != "postgresql" or not prepare:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []
    db = connections[DEFAULT_DB_ALIAS]  # this thread's connection, looked up once
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    prepared, logged = _cursor_classes()
    with db.wrap_database_errors:
        raw = prepared(db.connection)
    # Django's own wrappers around it (what connection.cursor() returns).
    wrapper = logged(raw, db) if db.queries_logged else db.make_cursor(raw)
    with wrapper as cursor:
        cursor.execute(sql, params)
        # The result's status, not cursor.description (which builds column objects).
        result = raw.pgresult
        return cursor.fetchall() if result is not None and result.status == TUPLES_OK else []


def advisory_locks(keys: Sequence[int], *, shared: bool = False) -> None:
    """In the caller's transaction, its advisory locks ``keys`` (exclusive,
    or ``shared``), taken in the order given; nothing on another database."""
    if not keys or connection.vendor != "postgresql":
        return
    take = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        # The array's order is the order taken.
        cursor.execute(f"SELECT {take}(k) FROM unnest(%s::bigint[]) AS k", [list(keys)])  # noqa: S608


@dataclass(frozen=True)
class Read(Generic[T]):
    """A SELECT of ``width`` columns and what to make of its rows (``load``,
    which must not rely on the rows' order). No SQL: nothing to ask."""

    sql: str
    params: Sequence[Any]
    width: int
    load: Callable[[list[tuple[Any, ...]]], T]
    prepare: bool = True  # False: planned for its values each time (``fetch``)

    @staticmethod
    def nothing(result: T) -> Read[T]:
        return Read("", [], 0, lambda rows: result)


def read(one: Read[T]) -> T:
    return one.load(fetch(one.sql, one.params, prepare=one.prepare) if one.sql else [])


def read_together(*reads: Read[Any]) -> list[Any]:
    """What each of ``reads`` loads, from one statement on PostgreSQL: each
    read becomes a subquery with a marker column, and the subqueries are
    stacked by full joins on false, so each row carries one read's columns
    (its marker true) and NULLs for the others'. One round trip and one
    execution instead of one per read; the joins compare every row with every
    other, which is nothing for the few rows of a request's reads."""
    asked = [i for i, r in enumerate(reads) if r.sql]
    if connection.vendor != "postgresql" or len(asked) < 2:
        return [read(r) for r in reads]
    joined = " FULL JOIN ".join(
        f"(SELECT true AS _{i}, q.* FROM ({reads[i].sql}) q) s{i}"  # noqa: S608 - selectors' SQL
        + (" ON false" if n else "")
        for n, i in enumerate(asked)
    )
    starts = {}
    at = 0
    for i in asked:
        starts[i] = at
        at += 1 + reads[i].width
    rows: list[list[tuple[Any, ...]]] = [[] for _ in reads]
    prepare = all(reads[i].prepare for i in asked)
    params = [p for i in asked for p in reads[i].params]
    for row in fetch(f"SELECT * FROM {joined}", params, prepare=prepare):  # noqa: S608
        for i, start in starts.items():
            if row[start]:
                rows[i].append(row[start + 1 : start + 1 + reads[i].width])
                break
    return [r.load(found) for r, found in zip(reads, rows, strict=True)]


@functools.cache
def _cursor_classes() -> tuple[type, type]:
    # Defined only under psycopg 3, so django-stubs do not declare it.
    from django.db.backends.postgresql.base import (  # type: ignore[attr-defined]
        ServerBindingCursor,
    )
    from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

    class PreparedCursor(ServerBindingCursor):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            kwargs.setdefault("prepare", settings.DB_PREPARE_HOT_QUERIES)
            return super().execute(query, params, **kwargs)

    class LoggedCursor(CursorDebugWrapper):
        """Logs the statement as written: its parameters travel apart, so there
        is no composed query text to read back from the driver."""

        def execute(self, sql: Any, params: Any = None) -> Any:
            with self.debug_sql(sql, params):
                return CursorWrapper.execute(self, sql, params)

    return PreparedCursor, LoggedCursor


def db_value(model: type[models.Model], field: str, value: Any) -> Any:
    """``value`` as a query parameter for ``model.field`` on this database."""
    # A concrete column, never a reverse relation or a generic foreign key.
    concrete = cast("models.Field[Any, Any]", model._meta.get_field(field))
    return concrete.get_db_prep_value(value, connection)


IN_LIST_MAX = 8


def in_list(column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """SQL for ``column`` equal to one of ``values`` (not empty), and its
    parameters. Up to IN_LIST_MAX values, an IN list: a parameter per value, the
    cheapest to send (a one-element array costs the driver more than the value).
    More go to PostgreSQL as one array parameter (``= ANY(%s)``): the text, and
    so the prepared statement, stays the same whatever the count, and the driver
    converts one parameter instead of one per value (its parsed-statement cache
    stops at 50 parameters). SQLite always gets an IN list."""
    if len(values) > IN_LIST_MAX and connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


# Up to this many rows, an INSERT goes as plain VALUES: PostgreSQL takes a few
# rows that way with about half the work of unpacking one-element arrays
# (140 vs 270 us of backend CPU for one ledger row). More go as arrays.
FEW_ROWS = 8


def pg_array(values: Sequence[object]) -> str:
    """``values`` as a PostgreSQL array literal in text form, for a parameter
    cast to a typed array (``%s::uuid[]``, ``%s::numeric(24,12)[]``).

    Each element is its ``str()`` (UUID, int, Decimal, bool, date, aware
    datetime and str all have a text form PostgreSQL parses back exactly) in
    double quotes, with backslash and quote escaped; None is NULL. Built a
    column at a time, since the driver's per-value adaptation of large arrays
    costs more than the statement itself.

    A column of one of the types whose text needs no escape (UUIDs, ints,
    bools, dates, aware datetimes), NULLs aside, is written by orjson, whose
    JSON list is the array literal once its brackets are braces (PostgreSQL
    reads an unquoted ``null`` as NULL, ``true`` as a boolean, and RFC 3339
    times): 60 us for 1,000 ids against 850 us of ``str()``, 130 us for
    1,000 times against 1,270 us, 22 us for 1,000 ints against 110 us."""
    kinds = set(map(type, values))
    if len(kinds - _NONE) == 1 and kinds <= _ORJSON_KINDS:
        try:
            return "{" + orjson.dumps(values)[1:-1].decode() + "}"
        except TypeError:  # past orjson's limits (an int past 64 bits, an odd offset)
            pass
    if type(None) in kinds:  # not `None in values`: that calls each __eq__
        return "{" + ",".join("NULL" if v is None else _quoted(str(v)) for v in values) + "}"
    texts = list(map(str, values))
    body = '","'.join(texts)
    # Only the separators' quotes, and no backslash: nothing to escape.
    if body.count('"') != 2 * (len(texts) - 1) or "\\" in body:
        body = '","'.join(t.replace("\\", "\\\\").replace('"', '\\"') for t in texts)
    return '{"' + body + '"}' if texts else "{}"


_NONE = {type(None)}
_ORJSON_KINDS = {uuid.UUID, int, bool, date, datetime, type(None)}


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
