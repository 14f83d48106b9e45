"""genai-prices' bundled data -> catalog rows (see ``costs.catalog.source`` for the contract).

Reads the package's public data modules (``genai_prices.data.providers``, the snapshot the
package itself prices with, and ``genai_prices.data_units.unit_data`` for each price key's
divisor) and its public types. Values there are already ``Decimal``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from genai_prices import __version__
from genai_prices import types as gp
from genai_prices.data import providers
from genai_prices.data_units import unit_data

from costs.catalog.source import (
    DECIMAL_CONTEXT,
    EPOCH,
    GENAI_PRICE_KEYS,
    CatalogModel,
    CatalogPrice,
    CatalogTier,
    unique,
)

SOURCE = f"genai-prices {__version__}"

# Price key -> how many units its price is for (1,000,000 tokens, 3,600 seconds, 1,000 requests).
_PER: dict[str, Decimal] = {unit["price_key"]: Decimal(unit["per"]) for unit in unit_data.values()}

# A genai-prices price that sets no key at all costs nothing for any usage.
_FREE = {"input_tokens": Decimal(0), "output_tokens": Decimal(0)}


def genai_models() -> list[CatalogModel]:
    rows: list[CatalogModel] = []
    for provider in providers:
        for info in provider.models:
            prices = _price_history(info.prices)
            if not prices:
                continue  # priced only by meters we lack (per page): skip, never price at zero
            aliases: list[str] = []
            prefixes: list[str] = []
            regexes: list[str] = []
            _flatten(info.match, aliases, prefixes, regexes)
            rows.append(
                CatalogModel(
                    provider=provider.id,
                    provider_name=provider.name,
                    slug=info.id,
                    name=info.name or info.id,
                    aliases=unique(tuple(aliases), drop=info.id.lower()),
                    match_prefixes=unique(tuple(prefixes)),
                    match_regexes=unique(tuple(regexes)),
                    prices=prices,
                )
            )
    return rows


def _price_history(prices: gp.ModelPrice | list[gp.ConditionalPrice]) -> tuple[CatalogPrice, ...]:
    """Replay genai-prices' rule (``ModelInfo.get_prices``) at every start date: the LAST listed
    price whose constraint is active wins, else the first listed price. Time-of-day prices are
    left out, i.e. treated as never active."""
    entries: list[tuple[date | None, gp.ModelPrice]] = []
    if isinstance(prices, gp.ModelPrice):
        entries.append((None, prices))
    else:
        for conditional in prices:
            constraint = conditional.constraint
            if isinstance(constraint, gp.TimeOfDateConstraint):
                continue
            start = (
                constraint.start_date if isinstance(constraint, gp.StartDateConstraint) else None
            )
            entries.append((start, conditional.prices))
    if not entries:
        return ()
    out: list[CatalogPrice] = []
    starts = sorted({start for start, _ in entries if start is not None})
    for when in [None, *starts]:
        active = [p for s, p in entries if s is None or (when is not None and s <= when)]
        chosen = active[-1] if active else entries[0][1]
        rates, tiers = _rates(chosen)
        if not rates or (out and (out[-1].rates, out[-1].tiers) == (rates, tiers)):
            continue  # nothing we can meter, or no change for our meters
        # StartDateConstraint compares the request's UTC date, so the price starts at midnight UTC.
        at = EPOCH if when is None else datetime.combine(when, time(), tzinfo=UTC)
        out.append(CatalogPrice(effective_from=at, rates=rates, tiers=tiers, source=SOURCE))
    if out and out[0].effective_from != EPOCH:
        # The earliest price we can meter also covers every date before it (first-price rule).
        out[0] = CatalogPrice(EPOCH, out[0].rates, out[0].tiers, out[0].source)
    return tuple(out)


def _rates(model_price: gp.ModelPrice) -> tuple[dict[str, Decimal], tuple[CatalogTier, ...]]:
    values = {key: value for key, value in vars(model_price).items() if value is not None}
    if not values:
        return dict(_FREE), ()
    rates: dict[str, Decimal] = {}
    steps: dict[str, list[tuple[int, Decimal]]] = {}
    for key, meter in GENAI_PRICE_KEYS:
        value = values.get(key)
        if value is None or meter in rates:
            continue
        if isinstance(value, gp.TieredPrices):
            rates[meter] = _per_unit(value.base, key)
            steps[meter] = sorted((tier.start, _per_unit(tier.price, key)) for tier in value.tiers)
        else:
            rates[meter] = _per_unit(value, key)
    tiers = []
    for threshold in sorted({start for meter_steps in steps.values() for start, _ in meter_steps}):
        # Carry lower tiers forward so the highest applicable tier is complete on its own.
        tier_rates = {
            meter: [rate for start, rate in meter_steps if start <= threshold][-1]
            for meter, meter_steps in steps.items()
            if meter_steps[0][0] <= threshold
        }
        tiers.append(CatalogTier(threshold=threshold, rates=tier_rates))
    return rates, tuple(tiers)


def _per_unit(value: object, key: str) -> Decimal:
    if isinstance(value, float):
        value = str(value)  # never Decimal(float): it would keep the binary noise
    if not isinstance(value, Decimal | int | str) or isinstance(value, bool):
        raise ValueError(f"genai-prices {key}: {value!r} is not a price")
    return DECIMAL_CONTEXT.divide(Decimal(value), _PER[key])


def _flatten(clause: Any, aliases: list[str], prefixes: list[str], regexes: list[str]) -> None:
    """OR branches become separate matchers: equals -> alias, starts_with -> prefix, anything
    else -> one regex that is equivalent under ``matches``."""
    if isinstance(clause, gp.ClauseOr):
        for branch in clause.or_:
            _flatten(branch, aliases, prefixes, regexes)
    elif isinstance(clause, gp.ClauseEquals):
        aliases.append(clause.equals.lower())
    elif isinstance(clause, gp.ClauseStartsWith):
        prefixes.append(clause.starts_with.lower())
    else:
        regexes.append(clause_regex(clause))


def clause_regex(clause: Any) -> str:
    """A regex that ``re.fullmatch``-es a lowercased name iff the genai-prices clause matches.

    genai-prices lowercases the name, compares equals/starts_with/ends_with/contains literals
    lowercased and applies ``regex`` with ``re.search``. Names are assumed to have no newline.
    """
    if isinstance(clause, gp.ClauseEquals):
        return re.escape(clause.equals.lower())
    if isinstance(clause, gp.ClauseStartsWith):
        return re.escape(clause.starts_with.lower()) + ".*"
    if isinstance(clause, gp.ClauseEndsWith):
        return ".*" + re.escape(clause.ends_with.lower())
    if isinstance(clause, gp.ClauseContains):
        return ".*" + re.escape(clause.contains.lower()) + ".*"
    if isinstance(clause, gp.ClauseRegex):
        return _search_as_fullmatch(clause.regex)
    if isinstance(clause, gp.ClauseOr):
        return "|".join(f"(?:{clause_regex(branch)})" for branch in clause.or_)
    if isinstance(clause, gp.ClauseAnd):
        *heads, last = [clause_regex(branch) for branch in clause.and_]
        # Each lookahead must match the WHOLE name; the last part then consumes it.
        return "".join(f"(?=(?:{head})\\Z)" for head in heads) + f"(?:{last})"
    raise ValueError(f"unsupported genai-prices match clause: {clause!r}")


def _search_as_fullmatch(regex: str) -> str:
    if regex.startswith("^") and not _has_top_level_bar(regex):
        body = regex[1:]  # "^" anchors the whole pattern: fullmatch already starts at 0
        if body.endswith("$") and _trailing_backslashes(body[:-1]) % 2 == 0:
            return body
        return body + ".*"
    return f".*?(?:{regex}).*"  # general case: a search hit may start and end anywhere


def _trailing_backslashes(text: str) -> int:
    return len(text) - len(text.rstrip("\\"))


def _has_top_level_bar(regex: str) -> bool:
    """Whether ``regex`` has an alternation outside any group (there ``^`` binds one branch)."""
    depth, index, class_start = 0, 0, -1
    while index < len(regex):
        char = regex[index]
        if char == "\\":
            index += 2  # an escaped character, whatever it is
            continue
        if class_start >= 0:
            # "]" right after "[" or "[^" is a literal; any later "]" closes the class.
            first = class_start + (2 if regex[class_start + 1 : class_start + 2] == "^" else 1)
            if char == "]" and index > first:
                class_start = -1
        elif char == "[":
            class_start = index
        elif char in "()":
            depth += 1 if char == "(" else -1
        elif char == "|" and depth == 0:
            return True
        index += 1
    return False
