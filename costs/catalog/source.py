"""Pure catalog source: genai-prices' bundled data plus our own extras as flat catalog rows.

No Django, no database, no network: ``load_catalog()`` is a deterministic function of the
installed ``genai-prices`` package and ``extra_prices.toml`` next to this file. The
``sync_prices`` command upserts its rows into Provider / AIModel / Price.

Contract
--------
* ``load_catalog()`` returns one ``CatalogModel`` per ``(provider, slug)``, unique. Providers keep
  genai-prices' order and models their order within a provider (extras that add a model come
  after that provider's genai-prices models; new providers come last, in file order).
* Rates are ``Decimal`` per SINGLE unit (per token, character, image, audio second, request),
  keyed by the meters in ``METERS``. Only meters with a price appear: ``Decimal(0)`` means free,
  a missing meter means "no price". Token meters follow genai-prices' semantics, which are those
  of ``costs.pricing.engine``: the ``input_tokens`` rate applies to the input tokens that no more
  specific priced meter (cached, cache write, audio) covers; likewise for output.
* ``prices`` is sorted by ``effective_from`` (aware UTC). A model's first price starts at
  ``EPOCH`` because genai-prices applies the first listed price to every earlier date.
* ``tiers`` are cliffs: when total input tokens are STRICTLY above ``threshold`` the tier's rates
  replace the base rates for the meters it names. Each tier repeats the effective rate of every
  tiered meter (lower tiers carried forward), so the highest applicable tier alone is enough.
* Names match case-insensitively (see ``matches``).

Not carried over from genai-prices (no meter or no way to express it):

* price keys outside ``GENAI_PRICE_KEYS``: cache_write_1h, cache_audio_read, input/output image
  and video tokens, reasoning and citation tokens, web/storage searches, document pages,
  messages. A model whose only prices are such keys (Mistral OCR, per page) is skipped rather
  than priced at zero. A genai-prices price that sets no key at all means "free" and becomes
  ``input_tokens = output_tokens = 0``.
* ``price_variants`` (service tier, flex/priority, batch overrides).
* conditional prices with a time-of-day constraint (off-peak windows); the model's other prices
  are kept. NB DeepSeek lists its DISCOUNTED price unconstrained and the standard price inside
  the window, so for DeepSeek the kept price is the off-peak one.
* lookup behaviour that is not per model: ``fallback_model_providers`` (e.g. azure -> openai)
  and the retry with compact dates (``-20251211`` -> ``-2025-12-11``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal
from pathlib import Path

from costs.pricing.engine import METERS

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""effective_from of a model's earliest price (genai-prices applies it to all earlier dates)."""

# The fixed meter contract, shared with the pricing engine.


GENAI_PRICE_KEYS: tuple[tuple[str, str], ...] = (
    # (genai-prices price key, our meter); the divisor comes from genai-prices' own unit table.
    # When several keys feed one meter the first one present wins (whisper-1 sets both audio
    # hour keys to the same price).
    ("input_mtok", "input_tokens"),
    ("output_mtok", "output_tokens"),
    ("cache_read_mtok", "cached_input_tokens"),
    ("cache_write_mtok", "cache_write_tokens"),  # genai-prices' default (5 minute) cache write
    ("cache_write_5m_mtok", "cache_write_tokens"),
    ("input_audio_mtok", "input_audio_tokens"),
    ("output_audio_mtok", "output_audio_tokens"),
    ("input_mchars", "characters"),
    ("audio_hours", "audio_seconds"),
    ("input_audio_hours", "audio_seconds"),
    ("output_audio_hours", "audio_seconds"),
    ("requests_kcount", "requests"),
)

EXTRAS_PATH = Path(__file__).with_name("extra_prices.toml")

DECIMAL_CONTEXT = Context(prec=28)
"""Context for unit conversions, independent of the caller's thread-local context so results
are the same everywhere. Terminating quotients (all the common ones) are exact."""


@dataclass(frozen=True)
class CatalogTier:
    """Cliff tier: above ``threshold`` total input tokens, ``rates`` replace the base rates."""

    threshold: int
    rates: dict[str, Decimal]


@dataclass(frozen=True)
class CatalogPrice:
    """Per-unit rates in force from ``effective_from`` (aware UTC) until the next price."""

    effective_from: datetime
    rates: dict[str, Decimal]
    tiers: tuple[CatalogTier, ...]
    source: str


@dataclass(frozen=True)
class CatalogModel:
    """One model of one provider; ``prices`` sorted by ``effective_from``, never empty.

    ``aliases`` and ``match_prefixes`` are lowercase; ``match_regexes`` are ``re.fullmatch``
    patterns over the lowercased name.
    """

    provider: str
    provider_name: str
    slug: str
    name: str
    aliases: tuple[str, ...]
    match_prefixes: tuple[str, ...]
    match_regexes: tuple[str, ...]
    prices: tuple[CatalogPrice, ...]


def matches(model: CatalogModel, name: str) -> bool:
    """True if ``name`` (any case) is the model's slug or an alias, starts with one of its
    prefixes, or ``re.fullmatch``-es one of its regexes once lowercased.

    More than one model of a provider can match a name (genai-prices takes the first in list
    order, which ``load_catalog`` preserves); prefer an exact slug/alias hit, then the longest
    prefix, then catalog order.
    """
    lowered = name.lower()
    return (
        lowered == model.slug.lower()
        or lowered in model.aliases
        or lowered.startswith(model.match_prefixes)
        or any(re.fullmatch(regex, lowered) for regex in model.match_regexes)
    )


def load_catalog(extras_path: Path | None = None) -> list[CatalogModel]:
    """genai-prices rows merged with the extras (default ``EXTRAS_PATH``).

    An extra with the (provider, slug) of a genai-prices model replaces its name, provider name
    and whole price history, and ADDS its aliases/prefixes/regexes to the package's, so every
    name the package matched still matches. Other extras are new models.
    """
    extras = {(model.provider, model.slug): model for model in load_extras(extras_path)}
    by_provider: dict[str, list[CatalogModel]] = {}
    for model in load_genai_prices():
        extra = extras.pop((model.provider, model.slug), None)
        merged = model if extra is None else _merge(model, extra)
        by_provider.setdefault(model.provider, []).append(merged)
    for extra in extras.values():
        by_provider.setdefault(extra.provider, []).append(extra)
    return [model for models in by_provider.values() for model in models]


def load_genai_prices() -> list[CatalogModel]:
    """Rows from the genai-prices data bundled with the installed package (never the network)."""
    from costs.catalog._genai import genai_models

    return genai_models()


def load_extras(path: Path | None = None) -> list[CatalogModel]:
    """Rows from our TOML file (default ``EXTRAS_PATH``; the format is documented at its top).

    Raises ``ValueError`` naming the row for an unknown or missing key, a float or negative
    rate, a price without any rate, a duplicate (provider, slug) or effective_from, so a typo
    can never silently price a model at zero.
    """
    from costs.catalog._extras import parse_extras

    return parse_extras(EXTRAS_PATH if path is None else path)


def _merge(base: CatalogModel, extra: CatalogModel) -> CatalogModel:
    return CatalogModel(
        provider=base.provider,
        provider_name=extra.provider_name,
        slug=base.slug,
        name=extra.name,
        aliases=unique(base.aliases + extra.aliases),
        match_prefixes=unique(base.match_prefixes + extra.match_prefixes),
        match_regexes=unique(base.match_regexes + extra.match_regexes),
        prices=extra.prices,
    )


def unique(items: tuple[str, ...], drop: str | None = None) -> tuple[str, ...]:
    """``items`` without duplicates (first occurrence kept) and without ``drop``."""
    return tuple(item for item in dict.fromkeys(items) if item != drop)


__all__ = [
    "DECIMAL_CONTEXT",
    "EPOCH",
    "EXTRAS_PATH",
    "GENAI_PRICE_KEYS",
    "METERS",
    "CatalogModel",
    "CatalogPrice",
    "CatalogTier",
    "load_catalog",
    "load_extras",
    "load_genai_prices",
    "matches",
]
