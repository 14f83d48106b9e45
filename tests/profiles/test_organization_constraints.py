"""The organization fields' rules held by the database too (profiles 0008),
and the migration that mends rows saved before them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from profiles.models import Organization

BEFORE = [("profiles", "0007_organization_alert_emails_addresses")]
AFTER = [("profiles", "0008_organization_field_constraints")]


@pytest.fixture
def back_at_0007():
    """The database migrated back to before the rules; forward again after,
    whatever the test did."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    yield
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_rows_saved_before_the_rules_are_mended_to_what_they_meant(back_at_0007):
    executor = MigrationExecutor(connection)
    old = executor.loader.project_state(BEFORE).apps.get_model("profiles", "Organization")
    rows = {
        "fine": dict(currency="EUR", spike_factor=Decimal("2.5"), spike_min_cost=Decimal("4")),
        "negative-floor": dict(spike_min_cost=Decimal("-1")),
        "factor-one": dict(spike_factor=Decimal("1")),
        "factor-below": dict(spike_factor=Decimal("0.5")),
        "small-letters": dict(currency="eur"),
        "one-space": dict(currency=" gb"),
        "no-code": dict(currency="$$$"),
    }
    for slug, fields in rows.items():
        old.objects.create(slug=slug, name=slug, **fields)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps.get_model("profiles", "Organization")
    stored = {
        o.slug: (o.currency, o.spike_factor, o.spike_min_cost)
        for o in new.objects.filter(slug__in=rows)
    }
    assert stored == {
        "fine": ("EUR", Decimal("2.5"), Decimal("4")),
        "negative-floor": ("USD", Decimal("3"), Decimal("0")),
        "factor-one": ("USD", Decimal("3"), Decimal("1")),
        "factor-below": ("USD", Decimal("3"), Decimal("1")),
        "small-letters": ("EUR", Decimal("3"), Decimal("1")),
        "one-space": ("USD", Decimal("3"), Decimal("1")),
        "no-code": ("USD", Decimal("3"), Decimal("1")),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        {"currency": "usd"},
        {"currency": "US"},
        {"currency": "ABC"},  # three capitals, but no ISO 4217 code
        {"spike_factor": Decimal("1")},
        {"spike_factor": Decimal("-2")},
        {"spike_min_cost": Decimal("-0.000000000001")},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
def test_writes_that_skip_validation_are_refused_by_the_database(tenant_a, change):
    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.filter(pk=tenant_a.org.pk).update(**change)
    tenant_a.org.refresh_from_db()
    assert (tenant_a.org.currency, tenant_a.org.spike_factor) == ("USD", Decimal("3"))
