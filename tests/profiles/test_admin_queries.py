"""An admin page's cost for tenant staff does not grow with the number of
registered models: their memberships are read once per request (the sidebar
asks every model's permissions), and so is the unread-alert count."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.factories import AlertFactory

pytestmark = pytest.mark.django_db


def _queries(client: Client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return [q["sql"] for q in captured.captured_queries]


def test_a_changelist_reads_memberships_and_unread_alerts_once(tenant_a, tenant_b, charlie):
    AlertFactory(organization=tenant_b.org)
    AlertFactory(organization=tenant_a.org)
    client = Client()
    client.force_login(charlie)
    url = reverse("admin:costs_provider_changelist")
    queries = _queries(client, url)
    memberships = [q for q in queries if 'FROM "profiles_membership"' in q]
    alert_counts = [q for q in queries if 'FROM "quotas_alert"' in q]
    assert len(memberships) == 1, memberships
    assert len(alert_counts) == 1, alert_counts
    assert len(queries) <= 10, queries
    # The count is charlie's own organization's alert, not the other tenant's.
    page = client.get(url).content.decode()
    assert "<span data-unread-count>1</span>" in page


def test_tenant_rows_are_listed_by_organization_ids_not_a_membership_subquery(
    tenant_a, tenant_b, charlie
):
    """With the ids as values the planner walks the ledger's (organization,
    time) index in page order; with a subquery it read and sorted every row
    of the organization (a seq scan and an on-disk sort at 500,000 events)."""
    from tests.isolation import seed_usage

    seed_usage(tenant_a)
    seed_usage(tenant_b)
    client = Client()
    client.force_login(charlie)
    queries = _queries(client, reverse("admin:costs_usageevent_changelist"))
    listing = [q for q in queries if q.startswith('SELECT "costs_usageevent"."id"')]
    assert len(listing) == 1, queries
    assert "profiles_membership" not in listing[0]
    assert str(tenant_b.org.pk).replace("-", "") in listing[0].replace("-", "")
    page = client.get(reverse("admin:costs_usageevent_changelist")).content.decode()
    assert tenant_a.org.slug not in page
