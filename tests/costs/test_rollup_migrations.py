"""costs 0006: the rollup rows earlier repricings left at zero are deleted,
the rows that count events stay as they were."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from costs.models import DailyUsage

BEFORE = [("costs", "0005_catalog_json_validated")]
AFTER = [("costs", "0006_rollups_without_events")]


@pytest.fixture
def back_at_0005():
    """The database migrated back to before the deletion; forward again
    after, whatever the test did."""
    MigrationExecutor(connection).migrate(BEFORE)
    yield
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_rows_left_at_zero_are_deleted_and_the_others_kept(back_at_0005, tenant_a):
    old = MigrationExecutor(connection).loader.project_state(BEFORE).apps
    rollup = old.get_model("costs", "DailyUsage")
    day = date(2026, 11, 20)
    common = dict(organization_id=tenant_a.org.pk, day=day, provider="openai", operation="chat")
    rollup.objects.create(model="gpt-new-alias", events=0, **common)  # what a reprice left
    rollup.objects.create(model="gpt-new", events=2, cost=Decimal("0.0084"), **common)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    kept = DailyUsage.objects.filter(organization=tenant_a.org)
    assert list(kept.values_list("model", "events", "cost")) == [("gpt-new", 2, Decimal("0.0084"))]
