"""GET /api/v1/pricing (the catalog in force with the tenant's overrides) and
POST /api/v1/estimate (price a usage without recording it).

Published prices used below: gpt-4o $2.50/M input, $10/M output, $1.25/M cached input;
gemini-2.5-pro $1.25/M in and $10/M out up to 200k input tokens, $2.50/M and $15/M above.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from costs.models import AIModel, Price, UsageEvent
from tests.conftest import CATALOG_MODELS
from tests.factories import make_key

pytestmark = pytest.mark.django_db


def _pricing(client, **query) -> list[dict]:
    resp = client.get("/api/v1/pricing", query)
    assert resp.status_code == 200, resp.content
    return resp.json()["results"]


def _estimate(client, body: dict):
    return client.post("/api/v1/estimate", body, format="json")


def _global_price(slug: str) -> Price:
    return Price.objects.get(model__slug=slug, organization__isnull=True)


@pytest.fixture
def override_a(catalog, tenant_a) -> Price:
    """Tenant A's negotiated gpt-4o rate: $2.00/M in, $8.00/M out, in force since an hour."""
    return Price.objects.create(
        model=AIModel.objects.get(provider__slug="openai", slug="gpt-4o"),
        organization=tenant_a.org,
        effective_from=timezone.now() - timedelta(hours=1),
        input_tokens=Decimal("0.000002"),
        output_tokens=Decimal("0.000008"),
    )


# -- /pricing ------------------------------------------------------------------------------


def test_pricing_shows_gpt4o_unit_prices_per_token(catalog, tenant_a):
    (entry,) = _pricing(tenant_a.client(), provider="openai", model="gpt-4o")
    assert entry["provider"] == "openai"
    assert entry["model"] == "gpt-4o"
    assert "gpt-4o-2024-08-06" in entry["aliases"]
    # $2.50/M = 0.0000025 per token; $10/M = 0.00001; $1.25/M = 0.00000125
    assert entry["unit_prices"]["input_tokens"] == "0.0000025"
    assert entry["unit_prices"]["output_tokens"] == "0.00001"
    assert entry["unit_prices"]["cached_input_tokens"] == "0.00000125"
    assert entry["override"] is False
    assert entry["price_id"] == str(_global_price("gpt-4o").pk)
    assert entry["currency"] == "USD"


def test_pricing_shows_gemini_tier(catalog, tenant_a):
    (entry,) = _pricing(tenant_a.client(), provider="google", model="gemini-2.5-pro")
    assert entry["unit_prices"]["input_tokens"] == "0.00000125"  # $1.25/M
    assert entry["unit_prices"]["output_tokens"] == "0.00001"  # $10/M
    (tier,) = entry["tiers"]
    assert tier["threshold"] == 200000
    # Plain decimal strings, as the unit prices are (never exponent form).
    assert tier["rates"]["input_tokens"] == "0.0000025"  # $2.50/M
    assert tier["rates"]["output_tokens"] == "0.000015"  # $15/M


def test_a_tier_entered_badly_in_the_admin_is_shown_not_a_500(catalog, tenant_a):
    price = _global_price("gpt-4o")
    price.tiers = [{"threshold": 1000, "rates": None}, {"threshold": 2000, "rates": {"x": "n/a"}}]
    price.save()
    (entry,) = _pricing(tenant_a.client(), provider="openai", model="gpt-4o")
    assert entry["tiers"] == [
        {"threshold": 1000, "rates": None},
        {"threshold": 2000, "rates": {"x": "n/a"}},
    ]


def test_pricing_writes_every_tier_rate_as_a_plain_decimal(catalog, tenant_a):
    entries = _pricing(tenant_a.client(), limit=500)
    rates = [r for e in entries for t in e["tiers"] for r in t["rates"].values()]
    assert rates, "the catalog fixture has tiered models"
    for rate in rates:
        assert "E" not in rate.upper() and Decimal(rate) > 0, rate


def test_pricing_lists_the_whole_catalog_filtered_by_provider(catalog, tenant_a):
    client = tenant_a.client()
    models = {(e["provider"], e["model"]) for e in _pricing(client, limit=500)}
    assert ("openai", "gpt-4o") in models
    assert ("google", "gemini-2.5-pro") in models
    assert models == CATALOG_MODELS  # exactly the catalog fixture's slice
    google = {e["model"] for e in _pricing(client, provider="google")}
    assert google == {"gemini-2.5-pro", "gemini-2.5-flash"}


def test_tenant_override_shows_for_its_tenant_only(override_a, tenant_a, tenant_b):
    (mine,) = _pricing(tenant_a.client(), provider="openai", model="gpt-4o")
    assert mine["override"] is True
    assert mine["price_id"] == str(override_a.pk)
    assert mine["unit_prices"]["input_tokens"] == "0.000002"
    assert mine["unit_prices"]["output_tokens"] == "0.000008"
    (theirs,) = _pricing(tenant_b.client(), provider="openai", model="gpt-4o")
    assert theirs["override"] is False
    assert theirs["price_id"] == str(_global_price("gpt-4o").pk)
    assert theirs["unit_prices"]["input_tokens"] == "0.0000025"


def test_override_starting_in_the_future_is_not_yet_in_force(catalog, tenant_a):
    Price.objects.create(
        model=AIModel.objects.get(provider__slug="openai", slug="gpt-4o"),
        organization=tenant_a.org,
        effective_from=timezone.now() + timedelta(days=1),
        input_tokens=Decimal("0.000001"),
    )
    (entry,) = _pricing(tenant_a.client(), provider="openai", model="gpt-4o")
    assert entry["override"] is False
    assert entry["unit_prices"]["input_tokens"] == "0.0000025"


def test_override_beats_a_later_global_price(override_a, tenant_a):
    Price.objects.create(
        model=override_a.model,
        effective_from=timezone.now() - timedelta(minutes=5),  # later than the override
        input_tokens=Decimal("0.000003"),
        output_tokens=Decimal("0.000012"),
    )
    (entry,) = _pricing(tenant_a.client(), provider="openai", model="gpt-4o")
    assert entry["override"] is True
    assert entry["price_id"] == str(override_a.pk)


# -- /estimate -------------------------------------------------------------------------------


def test_estimate_gpt4o_1500_in_2000_out(catalog, tenant_a):
    resp = _estimate(
        tenant_a.client(),
        {
            "provider": "openai",
            "model": "gpt-4o",
            "usage": {"input_tokens": 1500, "output_tokens": 2000},
        },
    )
    assert resp.status_code == 200, resp.content
    body = resp.json()
    # 1,500 x $2.50/M = 0.00375; 2,000 x $10/M = 0.02; total 0.02375
    assert body["cost"] == "0.023750000000"
    assert body["currency"] == "USD"
    assert body["model"] == "gpt-4o"
    assert body["price_id"] == str(_global_price("gpt-4o").pk)
    assert body["breakdown"] == {
        "input_tokens": "0.003750000000",
        "output_tokens": "0.020000000000",
    }
    assert sum(Decimal(v) for v in body["breakdown"].values()) == Decimal(body["cost"])


def test_estimate_records_nothing(catalog, tenant_a):
    _estimate(
        tenant_a.client(),
        {"provider": "openai", "model": "gpt-4o", "usage": {"input_tokens": 10}},
    )
    assert UsageEvent.objects.count() == 0


def test_estimate_resolves_an_alias(catalog, tenant_a):
    resp = _estimate(
        tenant_a.client(),
        {"provider": "OpenAI", "model": "gpt-4o-2024-08-06", "usage": {"input_tokens": 1000}},
    )
    assert resp.status_code == 200, resp.content
    assert resp.json()["model"] == "gpt-4o"
    assert resp.json()["cost"] == "0.002500000000"  # 1,000 x $2.50/M


def test_estimate_gemini_above_200k_is_billed_at_the_tier_rate(catalog, tenant_a):
    resp = _estimate(
        tenant_a.client(),
        {
            "provider": "google",
            "model": "gemini-2.5-pro",
            "usage": {"input_tokens": 250_000, "output_tokens": 1_000},
        },
    )
    assert resp.status_code == 200, resp.content
    # above 200k every unit at the tier: 250,000 x $2.50/M = 0.625; 1,000 x $15/M = 0.015
    assert resp.json()["cost"] == "0.640000000000"
    assert resp.json()["breakdown"] == {
        "input_tokens": "0.625000000000",
        "output_tokens": "0.015000000000",
    }


def test_estimate_gemini_at_exactly_200k_uses_the_base_rate(catalog, tenant_a):
    resp = _estimate(
        tenant_a.client(),
        {
            "provider": "google",
            "model": "gemini-2.5-pro",
            "usage": {"input_tokens": 200_000, "output_tokens": 1_000},
        },
    )
    # not above the threshold: 200,000 x $1.25/M = 0.25; 1,000 x $10/M = 0.01
    assert resp.json()["cost"] == "0.260000000000"


def test_estimate_takes_an_openai_raw_usage_object(catalog, tenant_a):
    resp = _estimate(
        tenant_a.client(),
        {
            "provider": "openai",
            "model": "gpt-4o",
            "usage": {
                "prompt_tokens": 1500,
                "completion_tokens": 2000,
                "total_tokens": 3500,
                "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
        },
    )
    assert resp.status_code == 200, resp.content
    # uncached 500 x $2.50/M = 0.00125; cached 1,000 x $1.25/M = 0.00125;
    # 2,000 x $10/M = 0.02; total 0.0225
    assert resp.json()["cost"] == "0.022500000000"
    assert resp.json()["breakdown"] == {
        "input_tokens": "0.001250000000",
        "output_tokens": "0.020000000000",
        "cached_input_tokens": "0.001250000000",
    }


def test_estimate_uses_the_tenants_override(override_a, tenant_a, tenant_b):
    body = {
        "provider": "openai",
        "model": "gpt-4o",
        "usage": {"input_tokens": 1500, "output_tokens": 2000},
    }
    mine = _estimate(tenant_a.client(), body).json()
    # override: 1,500 x $2.00/M = 0.003; 2,000 x $8.00/M = 0.016; total 0.019
    assert mine["cost"] == "0.019000000000"
    assert mine["price_id"] == str(override_a.pk)
    theirs = _estimate(tenant_b.client(), body).json()
    assert theirs["cost"] == "0.023750000000"


def test_estimate_at_a_past_moment_uses_the_price_then(catalog, tenant_a):
    model = AIModel.objects.get(provider__slug="openai", slug="gpt-4o")
    Price.objects.create(
        model=model,
        effective_from=timezone.now() - timedelta(days=1),
        input_tokens=Decimal("0.000005"),
        output_tokens=Decimal("0.00002"),
    )
    body = {"provider": "openai", "model": "gpt-4o", "usage": {"input_tokens": 1000}}
    now = _estimate(tenant_a.client(), body).json()
    assert now["cost"] == "0.005000000000"  # 1,000 x $5/M
    then = _estimate(tenant_a.client(), {**body, "at": "2026-01-01T00:00:00Z"}).json()
    assert then["cost"] == "0.002500000000"  # 1,000 x $2.50/M


def test_estimate_for_an_unknown_model_is_404(catalog, tenant_a):
    resp = _estimate(
        tenant_a.client(),
        {"provider": "openai", "model": "gpt-nonexistent", "usage": {"input_tokens": 1}},
    )
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        ({"input_tokens": -5}, "usage.input_tokens"),
        ({"input_tokens": 1.5}, "usage.input_tokens"),
        ({"input_tokens": "12"}, "usage.input_tokens"),
        ({"prompt_tokens": "many"}, "usage.prompt_tokens"),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}}, None),
    ],
)
def test_estimate_with_bad_usage_is_400_with_usage_field_details(catalog, tenant_a, usage, field):
    resp = _estimate(tenant_a.client(), {"provider": "openai", "model": "gpt-4o", "usage": usage})
    assert resp.status_code == 400, resp.content
    body = resp.json()
    assert body["error"] == "invalid"
    assert body["details"]
    assert all(k.startswith("usage.") for k in body["details"]), body["details"]
    if field is not None:
        assert field in body["details"]


@pytest.mark.parametrize("usage", [{"tokens": 5}, {}])
def test_estimate_with_a_usage_object_of_no_known_shape_is_400_on_usage(catalog, tenant_a, usage):
    resp = _estimate(tenant_a.client(), {"provider": "openai", "model": "gpt-4o", "usage": usage})
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid"
    assert set(resp.json()["details"]) == {"usage"}


def test_estimate_with_missing_fields_is_400(catalog, tenant_a):
    resp = _estimate(tenant_a.client(), {"provider": "openai"})
    assert resp.status_code == 400
    assert {"model", "usage"} <= set(resp.json()["details"])


@pytest.mark.parametrize("scope", ["ingest", "check", "read", "manage"])
def test_any_single_scope_may_read_pricing_and_estimate(catalog, tenant_a, scope):
    _, secret = make_key(tenant_a.org, scopes=scope)
    client = tenant_a.client(secret)
    assert client.get("/api/v1/pricing", {"model": "gpt-4o"}).status_code == 200
    resp = _estimate(
        client, {"provider": "openai", "model": "gpt-4o", "usage": {"input_tokens": 1000}}
    )
    assert resp.status_code == 200
    assert resp.json()["cost"] == "0.002500000000"


def test_pricing_and_estimate_need_a_key(catalog):
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/pricing").status_code == 401
    assert APIClient().post("/api/v1/estimate", {}, format="json").status_code == 401
