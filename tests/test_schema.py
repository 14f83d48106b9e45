"""The schema as migrations leave it on PostgreSQL."""

from __future__ import annotations

import pytest
from django.db import connection

APPS = ("profiles_", "costs_", "quotas_")


@pytest.mark.django_db
def test_no_index_is_the_start_of_another_on_the_same_table():
    """Every index is written on each insert and every counter update that is
    not HOT: one whose columns begin another btree index's (both over all
    rows) serves no lookup the longer one does not."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.relname, i.relname, x.indkey::text, x.indisunique
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_am a ON a.oid = i.relam
            WHERE a.amname = 'btree' AND x.indpred IS NULL AND x.indexprs IS NULL
            """
        )
        indexes = [row for row in cursor.fetchall() if row[0].startswith(APPS)]
    assert len(indexes) > 20  # the query sees the project's tables

    redundant = []
    for table, name, keys, unique in indexes:
        columns = keys.split()
        for other_table, other, other_keys, _ in indexes:
            longer = other_keys.split()
            if (
                other_table == table
                and other != name
                and len(longer) > len(columns)
                and longer[: len(columns)] == columns
                and not unique  # a unique index enforces something of its own
            ):
                redundant.append(f"{table}: {name} begins {other}")
    assert redundant == [], "\n".join(redundant)
