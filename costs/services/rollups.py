"""The daily rollup, kept current by additive upserts in the ingestion transaction."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from django.db import connection

from costs.models import COUNT_METERS, DailyUsage, UsageEvent

SUM_COLUMNS = ["events", "unpriced_events", *COUNT_METERS, "audio_seconds", "cost", "revenue"]
KEY_COLUMNS = ["organization_id", "day", "profile_id", "provider", "model", "operation"]


def _key(e: UsageEvent) -> tuple:
    return (e.organization_id, e.day, e.profile_id, e.provider, e.model, e.operation)


def rollup_add(*, events: Sequence[UsageEvent], sign: int = 1) -> None:
    """Add (or with ``sign=-1`` take away) events' quantities to their rollup rows.

    Rows are pre-aggregated per key (one statement may not touch a row twice) and
    written in key order, so concurrent ingests never deadlock on rollup rows."""
    if not events:
        return
    totals: dict[tuple, dict[str, Decimal | int]] = {}
    for e in events:
        acc = totals.setdefault(_key(e), dict.fromkeys(SUM_COLUMNS, 0))
        acc["events"] += 1
        acc["unpriced_events"] += 0 if e.priced else 1
        for m in COUNT_METERS:
            acc[m] += getattr(e, m)
        acc["audio_seconds"] += e.audio_seconds
        acc["cost"] += e.cost
        acc["revenue"] += e.revenue or 0
    rows = sorted(totals.items(), key=lambda kv: tuple("" if v is None else str(v) for v in kv[0]))
    with connection.cursor() as cursor:
        for with_profile in (True, False):
            part = [(k, acc) for k, acc in rows if (k[2] is not None) == with_profile]
            for start in range(0, len(part), 500):
                _upsert(cursor, part[start : start + 500], with_profile, sign)


def _upsert(cursor, chunk: list, with_profile: bool, sign: int) -> None:  # noqa: ANN001
    table = DailyUsage._meta.db_table
    keys = KEY_COLUMNS if with_profile else [c for c in KEY_COLUMNS if c != "profile_id"]
    predicate = "profile_id IS NOT NULL" if with_profile else "profile_id IS NULL"
    cols = keys + SUM_COLUMNS
    placeholders = "(" + ", ".join(["%s"] * len(cols)) + ")"
    updates = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in SUM_COLUMNS)
    params: list[object] = []
    for key, acc in chunk:
        params.extend(_db_value(v) for v in (key if with_profile else key[:2] + key[3:]))
        params.extend(sign * acc[c] for c in SUM_COLUMNS)
    sql = (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES "  # noqa: S608 - names are ours
        + ", ".join([placeholders] * len(chunk))
        + f" ON CONFLICT ({', '.join(keys)}) WHERE {predicate} DO UPDATE SET {updates}"
    )
    cursor.execute(sql, params)


def _db_value(value: object) -> object:
    # UUIDs go in as the backend stores them (SQLite keeps them as 32-char hex).
    if value is not None and hasattr(value, "hex") and connection.vendor == "sqlite":
        return value.hex  # type: ignore[attr-defined]
    return value
