"""Price one usage at a moment for an organization: what /estimate and the
pre-flight check use."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import Q

from costs.models import AIModel, Price
from costs.pricing.engine import price_usage
from costs.selectors.catalog import PriceBook, model_resolve, price_book, rates_of
from profiles.models import Organization


@dataclass(frozen=True)
class Estimate:
    priced: bool
    cost: Decimal
    model: str
    price_id: object | None = None
    breakdown: dict[str, Decimal] = field(default_factory=dict)


def cost_estimate(
    *,
    org: Organization,
    provider: str,
    model: str,
    usage: dict[str, int | Decimal],
    at: datetime,
    book: PriceBook | None = None,
) -> Estimate:
    """The cost of ``usage`` on ``provider``/``model`` at ``at`` for ``org`` (its own
    price if it has one). ``priced`` is False, cost 0, when the catalog has no price.
    ``book``: the model's prices, if the caller read them with its own reads
    (``price_book_read``)."""
    resolved = model_resolve(provider=provider, model=model)
    if resolved is None:
        return Estimate(priced=False, cost=Decimal(0), model=model)
    if book is None:
        book = price_book(org=org, model_ids=[resolved.id])
    price = book.at(resolved.id, at)
    if price is None:
        return Estimate(priced=False, cost=Decimal(0), model=resolved.slug)
    result = price_usage(price.rates, usage)
    return Estimate(True, result.total, resolved.slug, price.id, dict(result.lines))


@dataclass(frozen=True)
class CatalogEntry:
    model: AIModel
    price: Price
    override: bool


def pricing_in_force(
    *, org: Organization, at: datetime, provider: str | None = None, model: str | None = None
) -> list[CatalogEntry]:
    """Every model's price in force at ``at`` for ``org``: its own override where it
    has one, else the global price; models with no price yet are left out."""
    prices = Price.objects.filter(
        Q(organization__isnull=True) | Q(organization=org), effective_from__lte=at
    )
    models = AIModel.objects.select_related("provider")
    if provider:
        prices = prices.filter(model__provider__slug=provider.lower())
        models = models.filter(provider__slug=provider.lower())
    if model:
        prices = prices.filter(model__slug=model)
        models = models.filter(slug=model)
    best: dict[int, Price] = {}
    for p in prices.order_by("effective_from"):
        current = best.get(p.model_id)
        # Later rows win within a scope; a tenant's row always beats a global one.
        if current is None or p.organization_id is not None or current.organization_id is None:
            best[p.model_id] = p
    return [
        CatalogEntry(m, best[m.pk], best[m.pk].organization_id is not None)
        for m in models.order_by("provider__slug", "slug")
        if m.pk in best
    ]


__all__ = ["CatalogEntry", "Estimate", "cost_estimate", "pricing_in_force", "rates_of"]
