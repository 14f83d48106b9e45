"""The ledger's and rollups' admin filters: providers offered from the rollups
(never a scan of the ledger), the profile picked by search, and both within
the user's own organizations."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from costs.models import UsageEvent
from tests.factories import UserFactory
from tests.isolation import seed_usage

pytestmark = pytest.mark.django_db

LEDGER = "admin:costs_usageevent_changelist"
ROLLUPS = "admin:costs_dailyusage_changelist"


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("changelist", [LEDGER, ROLLUPS])
def test_providers_offered_are_the_users_own_and_read_off_the_rollups(
    tenant_a, tenant_b, charlie, changelist
):
    seed_usage(tenant_a)
    seed_usage(tenant_b)
    client = _client(charlie)
    with CaptureQueriesContext(connection) as captured:
        page = client.get(reverse(changelist))
    assert page.status_code == 200
    html = page.content.decode()
    assert "globex-provider" in html
    assert "acme-provider" not in html
    scans = [
        q["sql"]
        for q in captured.captured_queries
        if "DISTINCT" in q["sql"] and 'FROM "costs_usageevent"' in q["sql"]
    ]
    assert scans == []


def test_the_provider_filter_narrows_the_ledger(tenant_a, tenant_b, charlie):
    seed_usage(tenant_b)
    client = _client(charlie)
    url = reverse(LEDGER)
    shown = client.get(url, {"provider": "globex-provider"}).content.decode()
    assert "globex-model" in shown
    # Another tenant's provider, typed into the URL, finds none of its rows.
    seed_usage(tenant_a)
    other = client.get(url, {"provider": "acme-provider"}).content.decode()
    assert "acme-model" not in other and "globex-model" not in other


def test_the_profile_filter_is_a_search_not_a_list_and_stays_in_tenant(tenant_a, tenant_b, charlie):
    seed_usage(tenant_a)
    seed_usage(tenant_b)
    client = _client(charlie)
    url = reverse(LEDGER)
    with CaptureQueriesContext(connection) as captured:
        html = client.get(url).content.decode()
    # No query for the choices: the page does not list the profiles.
    assert not [q for q in captured.captured_queries if 'FROM "profiles_profile"' in q["sql"]]
    assert "unfold-filter-autocomplete" in html
    own = client.get(url, {"profile__id__exact": str(tenant_b.profile.pk)}).content.decode()
    assert "globex-model" in own
    theirs = client.get(url, {"profile__id__exact": str(tenant_a.profile.pk)}).content.decode()
    assert "acme-model" not in theirs and "globex-model" not in theirs
    assert tenant_a.profile.external_id not in theirs  # nor its name, as the one chosen
    nonsense = client.get(url, {"profile__id__exact": "abc"})
    assert nonsense.status_code < 500
    # The search behind it offers the user's own profiles only.
    found = client.get(
        reverse("admin:autocomplete"),
        {"term": "", "app_label": "costs", "model_name": "usageevent", "field_name": "profile"},
    )
    assert found.status_code == 200
    names = [r["text"] for r in found.json()["results"]]
    assert any(tenant_b.profile.external_id in n for n in names)
    assert not any(tenant_a.profile.external_id in n for n in names)


def test_a_superuser_is_offered_every_tenants_providers(tenant_a, tenant_b):
    seed_usage(tenant_a)
    seed_usage(tenant_b)
    root = UserFactory(username="root@example.com", is_superuser=True)
    html = _client(root).get(reverse(LEDGER)).content.decode()
    assert "acme-provider" in html and "globex-provider" in html
    assert UsageEvent.objects.count() == 2


def test_the_ledger_sorts_only_by_time(tenant_b, charlie):
    """Any other order reads and sorts the organization's whole ledger."""
    seed_usage(tenant_b)
    html = _client(charlie).get(reverse(LEDGER)).content.decode()
    sort_links = set(re.findall(r'href="\?o=([^"&]*)', html))
    assert "1" in sort_links
    assert all(link.lstrip("-").split(".")[0] in ("", "1") for link in sort_links), sort_links
    # A column index typed into the URL orders nothing: the time order stays.
    with CaptureQueriesContext(connection) as captured:
        assert _client(charlie).get(reverse(LEDGER), {"o": "-7"}).status_code == 200
    listing = [q["sql"] for q in captured.captured_queries if "LIMIT" in q["sql"]
               and q["sql"].startswith('SELECT "costs_usageevent"."id"')]  # fmt: skip
    assert listing and all('ORDER BY "costs_usageevent"."occurred_at" DESC' in q for q in listing)
