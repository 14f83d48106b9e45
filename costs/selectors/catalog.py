"""Catalog reads: resolve a (provider, model name) to a catalog model, and find
the price in force for an organization at a moment.

Name resolution runs on every ingested event, so the index of names is held in
memory per process for a few seconds (and dropped at once by any catalog write
in this process); prices are read from the database per request, or taken
from the organization's setup memo (``profiles.setup``), which is kept per
setup version and every price change bumps that version, so a new price is
used by the very next request everywhere.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

from config.rows import Read, RowReader, db_value, in_list, read
from costs.models import AIModel, Price
from costs.pricing.engine import METERS, Rates, Tier
from profiles.models import Organization
from profiles.setup import memo_part

INDEX_TTL_SECONDS = 5.0


@dataclass(frozen=True)
class ResolvedModel:
    id: int
    provider: str
    slug: str


@dataclass
class _ProviderIndex:
    exact: dict[str, ResolvedModel] = field(default_factory=dict)
    prefixes: list[tuple[str, ResolvedModel]] = field(default_factory=list)
    regexes: list[tuple[re.Pattern[str], ResolvedModel]] = field(default_factory=list)


class _CatalogIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built_at = 0.0
        self._by_provider: dict[str, _ProviderIndex] = {}
        self._memo: dict[tuple[str, str], ResolvedModel | None] = {}

    def clear(self) -> None:
        with self._lock:
            self._built_at = 0.0

    def _ensure(self) -> None:
        if time.monotonic() - self._built_at < INDEX_TTL_SECONDS:
            return
        with self._lock:
            if time.monotonic() - self._built_at < INDEX_TTL_SECONDS:
                return
            by_provider: dict[str, _ProviderIndex] = defaultdict(_ProviderIndex)
            rows = AIModel.objects.select_related("provider").order_by(
                "provider__slug", "position", "id"
            )
            for m in rows:
                resolved = ResolvedModel(m.pk, m.provider.slug, m.slug)
                idx = by_provider[m.provider.slug]
                for name in [m.slug, *m.aliases]:
                    idx.exact.setdefault(name.lower(), resolved)
                idx.prefixes.extend((p.lower(), resolved) for p in m.match_prefixes)
                for regex in m.match_regexes:
                    try:
                        idx.regexes.append((re.compile(regex), resolved))
                    except re.error:
                        continue  # a bad admin-entered pattern must not break pricing
            for idx in by_provider.values():
                # Longest prefix first; stable sort keeps catalog order among equals.
                idx.prefixes.sort(key=lambda item: -len(item[0]))
            self._by_provider = dict(by_provider)
            self._memo = {}
            self._built_at = time.monotonic()

    def resolve(self, provider: str, name: str) -> ResolvedModel | None:
        self._ensure()
        key = (provider.lower(), name.lower())
        if key in self._memo:
            return self._memo[key]
        idx = self._by_provider.get(key[0])
        found: ResolvedModel | None = None
        if idx is not None:
            lowered = key[1]
            found = idx.exact.get(lowered)
            if found is None:
                found = next((m for p, m in idx.prefixes if lowered.startswith(p)), None)
            if found is None:
                found = next((m for r, m in idx.regexes if r.fullmatch(lowered)), None)
        if len(self._memo) < 100_000:
            self._memo[key] = found
        return found


_index = _CatalogIndex()


def catalog_cache_clear() -> None:
    """Forget the name index; the next resolution rebuilds it from the database."""
    _index.clear()


def model_name(resolved: ResolvedModel | None, model: str) -> str:
    """The name an event or a budget carries for ``model`` as sent: its catalog
    model's, when the catalog knows it (``resolved``), else the name as sent."""
    return resolved.slug if resolved else model


def model_canonical(*, model: str, provider: str = "") -> str:
    """The catalog's name for ``model`` (an alias becomes its model's slug), so a
    budget scoped to a model matches the events recorded under that model. With
    no provider, only exact slugs and aliases are looked up, across providers."""
    provider = provider.strip().lower()
    if provider:
        return model_name(_index.resolve(provider, model), model)
    _index._ensure()
    lowered = model.lower()
    for idx in _index._by_provider.values():
        if (found := idx.exact.get(lowered)) is not None:
            return found.slug
    return model


def model_resolve(*, provider: str, model: str) -> ResolvedModel | None:
    """The catalog model ``model`` names for ``provider``: exact slug or alias (any
    case), else the longest matching prefix, else the first matching regex in
    catalog order; None when the catalog does not know it."""
    return _index.resolve(provider, model)


@dataclass(frozen=True)
class PriceRow:
    id: UUID
    model_id: int
    organization_id: object | None
    effective_from: datetime
    rates: Rates


def rates_of(price: Price) -> Rates:
    """A catalog row as the pure engine's input."""
    rates = {m: getattr(price, m) for m in METERS}
    tiers = tuple(
        Tier(
            threshold=int(t["threshold"]),
            rates={k: Decimal(str(v)) for k, v in t.get("rates", {}).items()},
        )
        for t in (price.tiers or [])
    )
    return Rates(rates=rates, tiers=tiers)


class PriceBook:
    """Every price of some models that one organization can use, for lookups by time.

    A tenant's own price (the latest that started by then) beats the global one;
    between prices of the same scope, the latest ``effective_from`` not after
    the moment wins."""

    def __init__(self, rows: Iterable[PriceRow]) -> None:
        self.rows = list(rows)
        self._own: dict[int, list[PriceRow]] = defaultdict(list)
        self._global: dict[int, list[PriceRow]] = defaultdict(list)
        for row in self.rows:
            target = self._global if row.organization_id is None else self._own
            target[row.model_id].append(row)
        for bucket in (*self._own.values(), *self._global.values()):
            bucket.sort(key=lambda r: r.effective_from, reverse=True)

    def at(self, model_id: int, moment: datetime) -> PriceRow | None:
        for bucket in (self._own.get(model_id, ()), self._global.get(model_id, ())):
            for row in bucket:
                if row.effective_from <= moment:
                    return row
        return None


_PRICES = RowReader(Price)


def price_book(*, org: Organization, model_ids: Iterable[int]) -> PriceBook:
    """One query: all global and ``org``'s prices of these models. Hand-written
    SQL: it runs on every check and every ingestion."""
    return read(price_book_read(org=org, model_ids=model_ids))


def price_book_read(*, org: Organization, model_ids: Iterable[int]) -> Read[PriceBook]:
    """``price_book`` as a ``Read``, to send with a request's other reads."""
    ids = sorted(set(model_ids))
    if not ids:
        return Read.nothing(PriceBook([]))
    models, params = in_list("p.model_id", ids)
    sql = (
        f"SELECT {_PRICES.columns('p')} FROM {Price._meta.db_table} p "  # noqa: S608 - our names
        f"WHERE {models} AND (p.organization_id IS NULL OR p.organization_id = %s)"
    )
    return Read(sql, [*params, db_value(Price, "organization", org.pk)], _PRICES.width, _book)


def _book(rows: list[tuple]) -> PriceBook:
    # Plain select, no outer join: the primary key is never NULL, so read() never gives None.
    prices = [cast(Price, _PRICES.read(row)) for row in rows]
    return PriceBook(
        PriceRow(p.pk, p.model_id, p.organization_id, p.effective_from, rates_of(p)) for p in prices
    )


def price_book_known(memo: dict[str, Any], model_ids: Iterable[int]) -> PriceBook | None:
    """The prices of ``model_ids`` as remembered in an organization's setup memo
    (``profiles.setup``); None unless every model's are."""
    known: dict[int, list[PriceRow]] = memo.get("prices", {})
    rows: list[PriceRow] = []
    for model_id in model_ids:
        found = known.get(model_id)
        if found is None:
            return None
        rows += found
    return PriceBook(rows)


def price_book_learn(memo: dict[str, Any], model_ids: Iterable[int], book: PriceBook) -> None:
    """Remember the prices of ``model_ids`` as ``book``, read at the memo's
    version (or after it), holds them: a model without a price, too."""
    known = memo_part(memo, "prices")
    for model_id in model_ids:
        known[model_id] = [r for r in book.rows if r.model_id == model_id]
