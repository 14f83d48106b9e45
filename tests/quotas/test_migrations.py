"""Data migrations of the limiter, run for real against the test database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("quotas", "0005_budget_index_by_profile")]
AFTER = [("quotas", "0006_budget_provider_lower_case")]


@pytest.mark.django_db(transaction=True)
def test_budgets_saved_with_a_capitalised_provider_are_lower_cased(tenant_a):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    Budget = old.get_model("quotas", "Budget")
    made = {
        provider: Budget.objects.create(
            organization_id=tenant_a.org.pk, name=provider or "any", provider=provider,
            limit=Decimal(1), thresholds=[80, 100],
        ).pk
        for provider in (" OpenAI ", "anthropic", "")
    }  # fmt: skip
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps.get_model("quotas", "Budget")
    stored = {p: new.objects.get(pk=pk).provider for p, pk in made.items()}
    assert stored == {" OpenAI ": "openai", "anthropic": "anthropic", "": ""}
