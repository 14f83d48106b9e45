"""Hand-written SQL in migrations that only PostgreSQL runs (triggers, functions)."""

from __future__ import annotations

from django.db import migrations


def postgresql_only(sql: str, reverse_sql: str, **tables: str) -> migrations.RunPython:
    """A migration operation running ``sql`` (``reverse_sql`` to undo it) on
    PostgreSQL and nothing elsewhere; ``{name}`` in either stands for the table
    of the model ``tables[name]`` ("app_label.Model") as the migration sees it."""

    def run(text: str):
        def apply(apps, schema_editor):
            if schema_editor.connection.vendor != "postgresql":
                return
            names = {
                name: apps.get_model(*label.split(".", 1))._meta.db_table
                for name, label in tables.items()
            }
            # No parameters: the text goes as written (PL/pgSQL uses % of its own).
            schema_editor.execute(text.format(**names), params=None)

        return apply

    return migrations.RunPython(run(sql), run(reverse_sql))
