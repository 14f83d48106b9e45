"""Our own price file (``extra_prices.toml``) -> catalog rows. The format is documented at the
top of that file; this parser is strict so a typo fails loudly instead of pricing at zero."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from costs.catalog.source import DECIMAL_CONTEXT, CatalogModel, CatalogPrice, CatalogTier, unique

# Human rate key -> (meter, how many units the written price is for).
RATE_KEYS: dict[str, tuple[str, int]] = {
    "input_per_mtok": ("input_tokens", 1_000_000),
    "output_per_mtok": ("output_tokens", 1_000_000),
    "cached_input_per_mtok": ("cached_input_tokens", 1_000_000),
    "cache_write_per_mtok": ("cache_write_tokens", 1_000_000),
    "input_audio_per_mtok": ("input_audio_tokens", 1_000_000),
    "output_audio_per_mtok": ("output_audio_tokens", 1_000_000),
    "per_character": ("characters", 1),
    "per_1k_characters": ("characters", 1_000),
    "per_1m_characters": ("characters", 1_000_000),
    "per_image": ("images", 1),
    "per_second": ("audio_seconds", 1),
    "per_minute": ("audio_seconds", 60),
    "per_hour": ("audio_seconds", 3_600),
    "per_request": ("requests", 1),
    "per_1k_requests": ("requests", 1_000),
}
_LIST_KEYS = ("aliases", "match_prefixes", "match_regexes")
_TEXT_KEYS = ("provider", "provider_name", "slug", "name")
_MODEL_KEYS = {*_TEXT_KEYS, *_LIST_KEYS, "prices"}
_PRICE_KEYS = {"effective_from", "source", "tiers", *RATE_KEYS}
_TIER_KEYS = {"threshold", *RATE_KEYS}


def parse_extras(path: Path) -> list[CatalogModel]:
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    _check_keys(document, {"models"}, set(), path.name)
    seen: set[tuple[str, str]] = set()
    models: list[CatalogModel] = []
    for index, row in enumerate(_tables(document.get("models", []), path.name)):
        where = f"{path.name} models[{index}] ({row.get('provider')}/{row.get('slug')})"
        model = _model(row, where)
        if (model.provider, model.slug) in seen:
            raise ValueError(f"{where}: duplicate (provider, slug)")
        seen.add((model.provider, model.slug))
        models.append(model)
    return models


def _model(row: dict[str, Any], where: str) -> CatalogModel:
    _check_keys(row, _MODEL_KEYS, {*_TEXT_KEYS, "prices"}, where)
    for key in _TEXT_KEYS:
        if not isinstance(row[key], str) or not row[key].strip():
            raise ValueError(f"{where}: {key} must be a non-empty string")
    lists: dict[str, list[str]] = {}
    for key in _LIST_KEYS:
        values = row.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"{where}: {key} must be a list of non-empty strings")
        lists[key] = values
    for regex in lists["match_regexes"]:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"{where}: bad regex {regex!r}: {exc}") from exc
    entries = _tables(row["prices"], where)
    if not entries:
        raise ValueError(f"{where}: needs at least one [[models.prices]] entry")
    prices = sorted(
        (_price(entry, f"{where} prices[{i}]") for i, entry in enumerate(entries)),
        key=lambda price: price.effective_from,
    )
    if len({price.effective_from for price in prices}) != len(prices):
        raise ValueError(f"{where}: two prices have the same effective_from")
    slug = row["slug"]
    return CatalogModel(
        provider=row["provider"],
        provider_name=row["provider_name"],
        slug=slug,
        name=row["name"],
        aliases=unique(tuple(alias.lower() for alias in lists["aliases"]), drop=slug.lower()),
        match_prefixes=unique(tuple(prefix.lower() for prefix in lists["match_prefixes"])),
        match_regexes=unique(tuple(lists["match_regexes"])),
        prices=tuple(prices),
    )


def _price(entry: dict[str, Any], where: str) -> CatalogPrice:
    _check_keys(entry, _PRICE_KEYS, {"effective_from", "source"}, where)
    when = entry["effective_from"]
    if isinstance(when, datetime):
        at = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    elif isinstance(when, date):
        at = datetime.combine(when, time(), tzinfo=UTC)
    else:
        raise ValueError(f"{where}: effective_from must be a TOML date such as 2024-01-31")
    if not isinstance(entry["source"], str) or not entry["source"].strip():
        raise ValueError(f"{where}: source must be a non-empty string")
    tiers = []
    for index, tier in enumerate(_tables(entry.get("tiers", []), where)):
        tier_where = f"{where} tiers[{index}]"
        _check_keys(tier, _TIER_KEYS, {"threshold"}, tier_where)
        threshold = tier["threshold"]
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0:
            raise ValueError(f"{tier_where}: threshold must be a non-negative integer")
        tiers.append(CatalogTier(threshold=threshold, rates=_rates(tier, tier_where)))
    if len({tier.threshold for tier in tiers}) != len(tiers):
        raise ValueError(f"{where}: two tiers have the same threshold")
    tiers.sort(key=lambda tier: tier.threshold)
    return CatalogPrice(
        effective_from=at,
        rates=_rates(entry, where),
        tiers=tuple(tiers),
        source=entry["source"],
    )


def _rates(entry: dict[str, Any], where: str) -> dict[str, Decimal]:
    rates: dict[str, Decimal] = {}
    for key, (meter, units) in RATE_KEYS.items():
        if key not in entry:
            continue
        value = entry[key]
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError(f'{where}: {key} must be a string such as "0.04" (floats are inexact)')
        try:
            amount = Decimal(value)
        except InvalidOperation as exc:
            raise ValueError(f"{where}: {key} = {value!r} is not a number") from exc
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"{where}: {key} = {value!r} must be finite and non-negative")
        if meter in rates:
            raise ValueError(f"{where}: more than one key sets the {meter} rate")
        rates[meter] = DECIMAL_CONTEXT.divide(amount, Decimal(units))
    if not rates:
        raise ValueError(f"{where}: no rate; use one of {', '.join(RATE_KEYS)}")
    return rates


def _tables(value: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"{where}: expected an array of tables ([[...]])")
    return value


def _check_keys(row: dict[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(set(row) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    missing = sorted(required - set(row))
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
