"""sync_prices: fill and refresh the global catalog from genai-prices and
costs/catalog/extra_prices.toml, idempotently, never editing a price an event used
nor a tenant's override.

The full catalog is synced (twice) in one test only: it takes a few seconds.
"""

from __future__ import annotations

import dataclasses
import io
import re
from decimal import Decimal

import pytest
from django.core.management import call_command

from costs.catalog.source import CatalogModel
from costs.models import AIModel, Price, Provider, UsageEvent
from costs.services.catalog import catalog_sync
from tests.conftest import _catalog_subset

pytestmark = pytest.mark.django_db

SUMMARY = re.compile(r"providers \+(\d+), models \+(\d+) ~(\d+), prices \+(\d+) ~(\d+) =(\d+)")


def _run_command() -> tuple[tuple[int, ...], str]:
    out = io.StringIO()
    call_command("sync_prices", stdout=out)
    text = out.getvalue()
    match = SUMMARY.search(text)
    assert match, text
    return tuple(int(g) for g in match.groups()), text


def _with_rates(cm: CatalogModel, **rates: Decimal) -> CatalogModel:
    """The model with its (only) price's rates changed, same effective_from."""
    (price,) = cm.prices
    return dataclasses.replace(
        cm, prices=(dataclasses.replace(price, rates={**price.rates, **rates}),)
    )


def _modified_subset(**changes: dict[str, Decimal]) -> list[CatalogModel]:
    return [
        _with_rates(cm, **changes[cm.slug]) if cm.slug in changes else cm
        for cm in _catalog_subset()
    ]


def _global(slug: str) -> Price:
    return Price.objects.get(model__slug=slug, organization__isnull=True)


def test_full_sync_fills_an_empty_catalog_and_a_second_run_changes_nothing():
    assert not Price.objects.exists()

    (providers, models, models_upd, prices, prices_upd, unchanged), _ = _run_command()

    assert providers == Provider.objects.count() > 10
    assert models == AIModel.objects.count() > 500
    assert prices == Price.objects.count() >= models
    assert (models_upd, prices_upd, unchanged) == (0, 0, 0)
    # published: gpt-4o $2.50/M in, $10/M out, $1.25/M cached
    gpt4o = Price.objects.get(model__provider__slug="openai", model__slug="gpt-4o")
    assert gpt4o.organization_id is None
    assert gpt4o.input_tokens == Decimal("0.0000025")
    assert gpt4o.output_tokens == Decimal("0.00001")
    assert gpt4o.cached_input_tokens == Decimal("0.00000125")
    # whisper-1 $0.006/min = $0.0001/s; tts-1-hd $30/M characters
    assert _global("whisper-1").audio_seconds == Decimal("0.0001")
    assert _global("tts-1-hd").characters == Decimal("0.00003")
    # an extra from extra_prices.toml: DALL-E 3 standard $0.04/image
    assert Price.objects.get(model__slug="dall-e-3", organization__isnull=True).images == Decimal(
        "0.04"
    )
    gemini = Price.objects.get(model__provider__slug="google", model__slug="gemini-2.5-pro")
    (tier,) = gemini.tiers
    assert tier["threshold"] == 200000
    assert Decimal(tier["rates"]["input_tokens"]) == Decimal("0.0000025")  # $2.50/M
    assert Decimal(tier["rates"]["output_tokens"]) == Decimal("0.000015")  # $15/M
    snapshot = list(Price.objects.order_by("id").values())

    again, text = _run_command()

    assert again == (0, 0, 0, 0, 0, Price.objects.count()), text
    assert "kept" not in text
    assert list(Price.objects.order_by("id").values()) == snapshot


def test_sync_of_the_same_catalog_again_is_a_no_op(catalog):
    stats = catalog_sync(catalog=_catalog_subset())
    assert stats.changed == 0
    assert stats.prices_unchanged == Price.objects.count()
    assert stats.prices_kept_used == []


def test_changed_source_updates_an_unused_global_price(catalog):
    before = _global("gpt-4o-mini")
    stats = catalog_sync(
        catalog=_modified_subset(**{"gpt-4o-mini": {"input_tokens": Decimal("0.0000002")}})
    )
    assert stats.prices_updated == 1
    assert stats.prices_created == 0
    after = _global("gpt-4o-mini")
    assert after.pk == before.pk
    assert after.input_tokens == Decimal("0.0000002")
    assert after.output_tokens == before.output_tokens


def test_changed_source_never_edits_a_global_price_an_event_used(catalog, tenant_a):
    resp = tenant_a.client().post(
        "/api/v1/usage",
        {
            "idempotency_key": "used",
            "provider": "openai",
            "model": "gpt-4o",
            "usage": {"input_tokens": 1500, "output_tokens": 2000},
        },
        format="json",
    )
    # 1,500 x $2.50/M + 2,000 x $10/M = 0.02375
    assert resp.json()["cost"] == "0.023750000000"
    used = _global("gpt-4o")
    assert resp.json()["price_id"] == str(used.pk)

    stats = catalog_sync(
        catalog=_modified_subset(
            **{
                "gpt-4o": {"input_tokens": Decimal("0.000003")},
                "gpt-4o-mini": {"input_tokens": Decimal("0.0000002")},
            }
        )
    )

    assert stats.prices_kept_used == [str(used)]
    assert stats.prices_updated == 1  # gpt-4o-mini only
    used.refresh_from_db()
    assert used.input_tokens == Decimal("0.0000025")  # history stays true
    assert _global("gpt-4o-mini").input_tokens == Decimal("0.0000002")
    assert UsageEvent.objects.get().cost == Decimal("0.02375")


def test_command_reports_a_used_price_it_kept(catalog, tenant_a, monkeypatch):
    tenant_a.client().post(
        "/api/v1/usage",
        {
            "idempotency_key": "used",
            "provider": "openai",
            "model": "gpt-4o",
            "usage": {"input_tokens": 1},
        },
        format="json",
    )
    used = _global("gpt-4o")
    modified = _modified_subset(**{"gpt-4o": {"output_tokens": Decimal("0.000011")}})
    monkeypatch.setattr("costs.management.commands.sync_prices.load_catalog", lambda: modified)

    counts, text = _run_command()

    assert counts == (0, 0, 0, 0, 0, Price.objects.count() - 1)
    assert f"kept (already used by events, add a newer price instead): {used}" in text
    used.refresh_from_db()
    assert used.output_tokens == Decimal("0.00001")


def test_sync_leaves_tenant_overrides_alone(catalog, tenant_a):
    from django.utils import timezone

    model = AIModel.objects.get(provider__slug="openai", slug="gpt-4o-mini")
    mini = _global("gpt-4o-mini")
    # An override that starts at the very moment of the global row: same (model, start).
    override = Price.objects.create(
        model=model,
        organization=tenant_a.org,
        effective_from=mini.effective_from,
        input_tokens=Decimal("0.0000001"),
    )
    later = Price.objects.create(
        model=model,
        organization=tenant_a.org,
        effective_from=timezone.now(),
        input_tokens=Decimal("0.00000009"),
    )

    stats = catalog_sync(
        catalog=_modified_subset(**{"gpt-4o-mini": {"input_tokens": Decimal("0.0000002")}})
    )

    assert stats.prices_updated == 1
    override.refresh_from_db()
    later.refresh_from_db()
    assert override.input_tokens == Decimal("0.0000001")
    assert later.input_tokens == Decimal("0.00000009")
    assert Price.objects.filter(organization=tenant_a.org).count() == 2
    assert _global("gpt-4o-mini").input_tokens == Decimal("0.0000002")


def test_sync_leaves_models_the_sources_do_not_mention(catalog):
    provider = Provider.objects.get(slug="openai")
    own = AIModel.objects.create(provider=provider, slug="in-house", aliases=["mine"])
    from django.utils import timezone

    price = Price.objects.create(
        model=own, effective_from=timezone.now(), input_tokens=Decimal("0.000001")
    )
    catalog_sync(catalog=_catalog_subset())
    assert AIModel.objects.filter(pk=own.pk, aliases=["mine"]).exists()
    price.refresh_from_db()
    assert price.input_tokens == Decimal("0.000001")


def test_a_new_price_in_the_source_is_added_beside_the_old_one(catalog):
    from datetime import UTC, datetime

    (cm,) = [m for m in _catalog_subset() if m.slug == "gpt-4o"]
    (old,) = cm.prices
    newer = dataclasses.replace(
        old,
        effective_from=datetime(2026, 12, 1, tzinfo=UTC),
        rates={**old.rates, "input_tokens": Decimal("0.000002")},
    )
    catalog = [
        dataclasses.replace(m, prices=(old, newer)) if m.slug == "gpt-4o" else m
        for m in _catalog_subset()
    ]
    stats = catalog_sync(catalog=catalog)
    assert (stats.prices_created, stats.prices_updated) == (1, 0)
    rows = list(
        Price.objects.filter(model__slug="gpt-4o", organization__isnull=True).order_by(
            "effective_from"
        )
    )
    assert [r.input_tokens for r in rows] == [Decimal("0.0000025"), Decimal("0.000002")]
