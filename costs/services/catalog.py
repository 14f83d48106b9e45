"""Catalog writes: sync the global catalog from its sources, and price changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from django.db import transaction

from config.rows import advisory_locks
from costs.catalog.source import CatalogModel, CatalogPrice
from costs.models import AIModel, Price, Provider, UsageEvent
from costs.pricing.engine import METERS
from costs.selectors.catalog import catalog_cache_clear

RATE_QUANTUM = Decimal(1).scaleb(-18)

# The catalog's gate, an advisory lock (the bytes of "catalog"): every large
# batch shares it while it checks its events' models and prices at its INSERT
# (``costs.services.ledger.ledger_keys_now``); a deletion of providers,
# models or prices, or a change of a model's unique columns, takes it for
# itself first (``catalog_gate_take``).
CATALOG_GATE = int.from_bytes(b"catalog", "big")


def catalog_gate_take() -> None:
    """In the caller's transaction, as its first lock: the catalog's gate for
    itself. A large batch holds a model and its prices FOR KEY SHARE from its
    INSERT on, then waits for rollups and counters that a single event of its
    organization may hold while it waits, at its COMMIT, for a price being
    deleted: the deletion must not be waiting for the batch meanwhile. So it
    waits for the batches in flight before it locks anything, and the batches
    arriving wait for it. Nothing on another database."""
    advisory_locks([CATALOG_GATE])


@dataclass
class SyncStats:
    providers_created: int = 0
    models_created: int = 0
    models_updated: int = 0
    prices_created: int = 0
    prices_updated: int = 0
    prices_unchanged: int = 0
    prices_kept_used: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return (
            self.providers_created
            + self.models_created
            + self.models_updated
            + (self.prices_created + self.prices_updated)
        )


def _rate(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(RATE_QUANTUM, rounding=ROUND_HALF_EVEN)


def _price_fields(p: CatalogPrice) -> dict[str, object]:
    fields: dict[str, object] = {m: _rate(p.rates.get(m)) for m in METERS}
    fields["tiers"] = [
        {"threshold": t.threshold, "rates": {k: str(_rate(v)) for k, v in sorted(t.rates.items())}}
        for t in p.tiers
    ]
    return fields


# SQLite (the embedded default) keeps ~15 significant digits of a decimal; a
# real price change is never this small, so treat closer values as equal.
_TOLERANCE = Decimal("1e-16")


def _equal(a: object, b: object) -> bool:
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return abs(a - b) <= _TOLERANCE
    return a == b


def _same(price: Price, fields: dict[str, object]) -> bool:
    return all(_equal(getattr(price, k), v) for k, v in fields.items())


def catalog_sync(*, catalog: list[CatalogModel]) -> SyncStats:
    """Make the global catalog hold ``catalog``: idempotent (a second run changes
    nothing). Models and global prices are created or brought up to date; a
    global price an event already used is never edited (history stays true) and
    is reported instead. Tenant overrides and rows the sources do not mention
    are left alone."""
    stats = SyncStats()
    with transaction.atomic():
        providers = {p.slug: p for p in Provider.objects.all()}
        for cm in catalog:
            if cm.provider not in providers:
                providers[cm.provider] = Provider.objects.create(
                    slug=cm.provider, name=cm.provider_name
                )
                stats.providers_created += 1
        models = {(m.provider.slug, m.slug): m for m in AIModel.objects.select_related("provider")}
        to_update: list[AIModel] = []
        for position, cm in enumerate(catalog):
            wanted = {
                "name": cm.name,
                "aliases": list(cm.aliases),
                "match_prefixes": list(cm.match_prefixes),
                "match_regexes": list(cm.match_regexes),
                "position": position,
            }
            existing = models.get((cm.provider, cm.slug))
            if existing is None:
                models[(cm.provider, cm.slug)] = AIModel.objects.create(
                    provider=providers[cm.provider], slug=cm.slug, **wanted
                )
                stats.models_created += 1
            elif any(getattr(existing, k) != v for k, v in wanted.items()):
                for k, v in wanted.items():
                    setattr(existing, k, v)
                to_update.append(existing)
        if to_update:
            AIModel.objects.bulk_update(to_update, list(wanted.keys()))
            stats.models_updated = len(to_update)

        prices = {
            (p.model_id, p.effective_from): p
            for p in Price.objects.filter(organization__isnull=True)
        }
        # order_by(): the ledger's default ordering would turn DISTINCT into one
        # row per event.
        used = set(
            UsageEvent.objects.filter(price__organization__isnull=True)
            .order_by()
            .values_list("price_id", flat=True)
            .distinct()
        )
        new_prices: list[Price] = []
        changed_prices: list[Price] = []
        for cm in catalog:
            model = models[(cm.provider, cm.slug)]
            for cp in cm.prices:
                fields = _price_fields(cp)
                existing_price = prices.get((model.pk, cp.effective_from))
                if existing_price is None:
                    new_prices.append(
                        Price(
                            model=model,
                            effective_from=cp.effective_from,
                            source=cp.source,
                            **fields,
                        )
                    )
                elif _same(existing_price, fields):
                    stats.prices_unchanged += 1
                elif existing_price.pk in used:
                    stats.prices_kept_used.append(str(existing_price))
                else:
                    for k, v in fields.items():
                        setattr(existing_price, k, v)
                    existing_price.source = cp.source
                    changed_prices.append(existing_price)
        Price.objects.bulk_create(new_prices, batch_size=500)
        if changed_prices:
            Price.objects.bulk_update(changed_prices, [*METERS, "tiers", "source"], batch_size=500)
        stats.prices_created = len(new_prices)
        stats.prices_updated = len(changed_prices)
    catalog_cache_clear()
    return stats


def price_is_used(*, price: Price) -> bool:
    """A price some event was priced with: frozen, changes go in a new row."""
    return UsageEvent.objects.filter(price_id=price.pk).exists()
