"""Isolation beyond changelists and object URLs: admin autocomplete and
list-filter views, mass assignment through the API, and list caps."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from costs.models import UsageEvent
from quotas.models import Budget, BudgetPeriod
from tests.isolation import seed_usage

pytestmark = pytest.mark.django_db


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_admin_autocomplete_offers_only_own_profiles(tenant_a, tenant_b, charlie):
    resp = _login(charlie).get(
        reverse("admin:autocomplete"),
        {"term": "", "app_label": "quotas", "model_name": "budget", "field_name": "profile"},
    )
    assert resp.status_code == 200
    names = [r["text"] for r in resp.json()["results"]]
    assert names, "charlie's own profiles must be offered"
    assert all(tenant_a.profile.external_id not in n for n in names)
    searched = _login(charlie).get(
        reverse("admin:autocomplete"),
        {"term": "alice", "app_label": "quotas", "model_name": "budget", "field_name": "profile"},
    )
    assert searched.json()["results"] == []


def test_admin_list_filter_choices_and_filtered_urls_stay_in_tenant(tenant_a, tenant_b, charlie):
    seed_usage(tenant_a)
    seed_usage(tenant_b)
    client = _login(charlie)
    url = reverse("admin:costs_usageevent_changelist")
    html = client.get(url).content.decode()
    assert tenant_b.profile.display_name in html or tenant_b.profile.external_id in html
    assert tenant_a.profile.external_id not in html
    assert "acme-provider" not in html  # the provider filter lists own values only
    # Filtering by another tenant's profile id shows nothing of it.
    filtered = client.get(url, {"profile__id__exact": str(tenant_a.profile.pk)})
    assert filtered.status_code == 200
    assert "acme-model" not in filtered.content.decode()


def test_usage_body_cannot_set_organization_price_or_id(tenant_a, tenant_b, catalog):
    client = tenant_a.client()
    base = {
        "idempotency_key": "mass-1",
        "provider": "openai",
        "model": "gpt-4o",
        "usage": {"input_tokens": 1000},
    }
    for extra in (
        {"organization": str(tenant_b.org.pk)},
        {"price_id": "x"},
        {"id": "x"},
        {"priced": True},
        {"price": "1"},
    ):
        resp = client.post("/api/v1/usage", {**base, **extra}, format="json")
        assert resp.status_code == 400, extra
        assert set(extra) & set(resp.json()["details"]), resp.json()
    assert not UsageEvent.objects.exists()
    ok = client.post("/api/v1/usage", base, format="json")
    assert ok.status_code == 201
    assert UsageEvent.objects.get().organization_id == tenant_a.org.pk


def test_budget_writes_ignore_counters_and_organization(tenant_a, tenant_b):
    client = tenant_a.client()
    resp = client.post(
        "/api/v1/budgets",
        {
            "name": "b",
            "limit": "5",
            "organization": str(tenant_b.org.pk),
            "spent": "4",
            "reserved": "1",
        },
        format="json",
    )
    assert resp.status_code == 201
    budget = Budget.objects.get(pk=resp.json()["id"])
    assert budget.organization_id == tenant_a.org.pk
    period = BudgetPeriod.objects.get(budget=budget)
    assert (period.spent, period.reserved) == (Decimal(0), Decimal(0))
    client.patch(f"/api/v1/budgets/{budget.pk}", {"spent": "3", "reserved": "2"}, format="json")
    period.refresh_from_db()
    assert (period.spent, period.reserved) == (Decimal(0), Decimal(0))


def _many(path, org, n):
    from django.utils import timezone

    from costs.models import AIModel, Price, Provider
    from profiles.models import Profile
    from quotas.models import Alert

    now = timezone.now()
    if path == "/api/v1/profiles":
        Profile.objects.bulk_create(
            [Profile(organization=org, external_id=f"p-{i}") for i in range(n)]
        )
    elif path == "/api/v1/usage":
        UsageEvent.objects.bulk_create(
            [
                UsageEvent(
                    organization=org,
                    idempotency_key=f"k{i}",
                    request_hash="h",
                    provider="p",
                    model="m",
                    model_requested="m",
                    occurred_at=now,
                    received_at=now,
                    day=now.date(),
                )
                for i in range(n)
            ]
        )
    elif path == "/api/v1/budgets":
        Budget.objects.bulk_create(
            [Budget(organization=org, name=f"b{i}", limit=Decimal(1)) for i in range(n)]
        )
    elif path == "/api/v1/alerts":
        Alert.objects.bulk_create(
            [
                Alert(
                    organization=org, kind="spend_spike", title="t", message="m", dedup_key=f"d{i}"
                )
                for i in range(n)
            ]
        )
    elif path == "/api/v1/pricing":
        provider = Provider.objects.create(slug="bulk", name="Bulk")
        models = AIModel.objects.bulk_create(
            [AIModel(provider=provider, slug=f"m{i}") for i in range(n)]
        )
        Price.objects.bulk_create(
            [Price(model=m, effective_from=now, input_tokens=Decimal(1)) for m in models]
        )


@pytest.mark.parametrize(
    ("path", "cap"),
    [
        ("/api/v1/profiles", 500),
        ("/api/v1/budgets", 500),
        ("/api/v1/alerts", 500),
        ("/api/v1/pricing", 500),
        ("/api/v1/usage", 1000),
    ],
)
def test_every_list_caps_its_page_size(tenant_a, path, cap):
    _many(path, tenant_a.org, cap + 5)
    resp = tenant_a.client().get(path, {"limit": 100000})
    assert resp.status_code == 200
    body = resp.json()
    assert len(body["results"]) == cap
    assert body["next"]
