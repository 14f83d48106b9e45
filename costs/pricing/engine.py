"""Pure pricing engine: turn normalised usage and per-unit rates into an exact Decimal cost.

No Django, no database, no I/O: everything here is a function of its arguments, so it can be
unit-tested exhaustively and reused by the ledger, the estimator and the backfill jobs alike.

Meters
------
The fixed contract list (order matters: it is the order of lines and of ``unpriced_meters``)::

    input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
    input_audio_tokens, output_audio_tokens, characters, images, audio_seconds, requests

All are non-negative integers except ``audio_seconds``, a non-negative ``Decimal``.

Token semantics
---------------
* ``input_tokens`` is the TOTAL input count (OpenAI ``prompt_tokens`` style). It INCLUDES
  ``cached_input_tokens``, ``cache_write_tokens`` and ``input_audio_tokens``; those three are
  disjoint subsets of it.
* ``output_tokens`` is the TOTAL output count. It INCLUDES ``output_audio_tokens`` and any
  reasoning / thinking tokens (reasoning is billed at the output rate, so it has no meter).

Billing
-------
* ``cached_input_tokens`` are billed at the ``cached_input_tokens`` rate, ``cache_write_tokens``
  at the ``cache_write_tokens`` rate, ``input_audio_tokens`` at the ``input_audio_tokens`` rate,
  and only the remainder ``input_tokens - cached - cache_write - input_audio`` at the
  ``input_tokens`` rate. Likewise ``output_tokens - output_audio_tokens`` is billed at the
  ``output_tokens`` rate and ``output_audio_tokens`` at the ``output_audio_tokens`` rate.
* If a subset rate is ``None`` (missing), that subset falls back to its parent rate
  (``input_tokens`` or ``output_tokens``): a model without a cache price bills cached tokens as
  ordinary input.
* ``characters``, ``images``, ``audio_seconds`` and ``requests`` are billed at their own rates.
* A meter with billed usage but no rate (``None`` after fallback) costs 0 and is listed in
  ``CostBreakdown.unpriced_meters`` so the caller can flag the record as incompletely priced.

Tiers ("cliff" pricing)
-----------------------
A price may carry tiers ``(threshold, partial rates)``. A tier applies when the TOTAL
``input_tokens`` is STRICTLY GREATER than its threshold (``>``, exactly as genai-prices does in
``calc_unit_price``: ``if total_input_tokens > tier.start``). The highest applicable tier wins
and its rates replace the base rates, for the meters the tier names, for ALL units of those
meters (not only the units above the threshold). So with a 200,000 threshold, a 200,000-token
prompt is billed at base rates and a 200,001-token prompt entirely at tier rates. Subset
fallback (above) happens after the tier is applied, so a tier that only re-prices
``input_tokens`` also re-prices cached tokens of a model that has no cache rate.

Money
-----
Rates are ``Decimal`` per single unit (gpt-4o input at $2.50 per million tokens is
``Decimal("0.0000025")`` per token). Each line is ``quantity * rate`` computed exactly in a
50-digit context that TRAPS ``Inexact`` (so a product that would not fit raises instead of
rounding silently), then quantised to 12 decimal places with ROUND_HALF_EVEN. The total is the
sum of the quantised lines, so the lines always add up to the total exactly. Floats are rejected
everywhere: a float rate or quantity raises ``TypeError``.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

METERS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "characters",
    "images",
    "audio_seconds",
    "requests",
)
"""The fixed meter contract, in contract order."""

COUNT_METERS: tuple[str, ...] = tuple(m for m in METERS if m != "audio_seconds")
"""Meters whose quantities are integers (everything except ``audio_seconds``)."""

INPUT_SUBSETS: tuple[str, ...] = ("cached_input_tokens", "cache_write_tokens", "input_audio_tokens")
"""Meters that are disjoint subsets of ``input_tokens`` and fall back to its rate."""

OUTPUT_SUBSETS: tuple[str, ...] = ("output_audio_tokens",)
"""Meters that are subsets of ``output_tokens`` and fall back to its rate."""

# price_usage reads the totals and their subsets by position.
assert METERS[:6] == ("input_tokens", "output_tokens", *INPUT_SUBSETS, *OUTPUT_SUBSETS)

MONEY_PLACES: int = 12
"""Decimal places kept on every returned money value."""

_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)  # Decimal("1E-12")
_ZERO_MONEY = Decimal(0).quantize(_MONEY_QUANTUM)  # Decimal("0E-12")

# 50 significant digits comfortably holds quantity (<= 10**15, 16 digits) times a per-unit rate
# with up to ~30 significant digits. Trapping Inexact turns "would have rounded" into an
# exception, so multiplication and addition can never lose money silently.
_EXACT_CONTEXT = decimal.Context(
    prec=50,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
        decimal.Inexact,
    ],
)

# Quantising to 12 dp is the one place where rounding is intended, so Inexact is not trapped;
# InvalidOperation still fires if the quantised coefficient would exceed the precision.
_QUANTIZE_CONTEXT = decimal.Context(
    prec=50,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)


def _check_rate(meter: str, rate: object, *, allow_none: bool) -> None:
    """Raise unless ``rate`` is a finite, non-negative Decimal (or None when allowed)."""
    if rate is None:
        if allow_none:
            return
        raise TypeError(f"Rate for {meter!r} must be a Decimal, not None.")
    # bool/int/float are refused: rates always come from Decimal columns or Decimal literals,
    # and an accidental binary float would carry representation error into money.
    if not isinstance(rate, Decimal):
        raise TypeError(f"Rate for {meter!r} must be a Decimal, got {type(rate).__name__}.")
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"Rate for {meter!r} must be finite and non-negative, got {rate}.")


def _check_meter_keys(keys: Mapping[str, object], what: str) -> None:
    """Reject unknown meter names so a typo in a price row cannot silently price at zero."""
    unknown = sorted(k for k in keys if k not in METERS)
    if unknown:
        raise ValueError(f"Unknown meter(s) in {what}: {', '.join(map(str, unknown))}.")


@dataclass(frozen=True)
class Tier:
    """A cliff tier: when total ``input_tokens > threshold``, ``rates`` replace the base rates.

    ``rates`` is partial: only the meters it names are re-priced; every unit of those meters is
    billed at the tier rate. Rates are finite non-negative Decimals per single unit.
    """

    threshold: int
    rates: Mapping[str, Decimal]

    def __post_init__(self) -> None:
        if type(self.threshold) is not int or self.threshold < 0:
            raise ValueError(f"Tier threshold must be a non-negative int, got {self.threshold!r}.")
        _check_meter_keys(self.rates, "tier rates")
        for meter, rate in self.rates.items():
            _check_rate(meter, rate, allow_none=False)
        # Copy into a read-only view so the frozen dataclass cannot be mutated via the caller's
        # dict after validation.
        object.__setattr__(self, "rates", MappingProxyType(dict(self.rates)))


@dataclass(frozen=True)
class Rates:
    """Per-unit rates for one model/price version, plus optional cliff tiers.

    ``rates`` maps meter name -> Decimal per single unit, or None for "no price". Meters that
    are absent behave like None. Tiers are stored sorted by ascending threshold; duplicate
    thresholds are rejected because "which one wins" would be undefined.
    """

    rates: Mapping[str, Decimal | None]
    tiers: tuple[Tier, ...] = field(default=())
    # Rate per meter (contract order) after tier and subset fallback, for the base
    # rates (key None) and each tier (key: its threshold): worked out once here,
    # since every event priced with these rates needs one of them.
    effective: Mapping[int | None, tuple[Decimal | None, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _check_meter_keys(self.rates, "rates")
        for meter, rate in self.rates.items():
            _check_rate(meter, rate, allow_none=True)
        tiers = tuple(sorted(self.tiers, key=lambda t: t.threshold))
        thresholds = [t.threshold for t in tiers]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError(f"Duplicate tier thresholds: {thresholds}.")
        object.__setattr__(self, "rates", MappingProxyType(dict(self.rates)))
        object.__setattr__(self, "tiers", tiers)
        effective: dict[int | None, tuple[Decimal | None, ...]] = {
            None: _effective_rates(self.rates, None)
        }
        effective.update((t.threshold, _effective_rates(self.rates, t)) for t in tiers)
        object.__setattr__(self, "effective", MappingProxyType(effective))


def _effective_rates(
    rates: Mapping[str, Decimal | None], tier: Tier | None
) -> tuple[Decimal | None, ...]:
    """Each meter's rate with ``tier`` applied, then subset fallback (see the module docstring)."""
    effective: dict[str, Decimal | None] = {meter: rates.get(meter) for meter in METERS}
    if tier is not None:
        effective.update(tier.rates)
    # Fallback after tiers so the subset inherits the tiered parent rate when it has none.
    for subset in INPUT_SUBSETS:
        if effective[subset] is None:
            effective[subset] = effective["input_tokens"]
    for subset in OUTPUT_SUBSETS:
        if effective[subset] is None:
            effective[subset] = effective["output_tokens"]
    return tuple(effective[meter] for meter in METERS)


@dataclass(frozen=True)
class CostBreakdown:
    """Result of :func:`price_usage`.

    * ``total``: sum of ``lines`` (exactly; every value has 12 decimal places).
    * ``lines``: meter -> cost, in contract order, only for meters with a non-zero BILLED
      quantity. The ``input_tokens`` line prices the uncached, non-audio input remainder and the
      ``output_tokens`` line the non-audio output remainder; so a fully cached prompt has a
      ``cached_input_tokens`` line and no ``input_tokens`` line.
    * ``tier``: threshold of the applied tier, or None when base rates were used.
    * ``unpriced_meters``: meters with billed usage but no rate (their line is 0), contract order.
    """

    total: Decimal
    lines: dict[str, Decimal]
    tier: int | None
    unpriced_meters: tuple[str, ...]


def quantize_money(value: Decimal) -> Decimal:
    """Round ``value`` to 12 decimal places, ROUND_HALF_EVEN (banker's rounding).

    Uses its own 50-digit context, so the caller's ambient decimal context is irrelevant.
    """
    if not isinstance(value, Decimal):
        raise TypeError(f"quantize_money expects a Decimal, got {type(value).__name__}.")
    return value.quantize(_MONEY_QUANTUM, context=_QUANTIZE_CONTEXT)


def _quantity(usage: Mapping[str, int | Decimal], meter: str) -> Decimal:
    """Read one meter as an exact Decimal; missing means 0. Floats and bools are refused."""
    value = usage.get(meter, 0)
    if value is None:
        return Decimal(0)
    # bool is an int subclass: True would silently bill one unit.
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise TypeError(f"Usage {meter!r} must be an int or Decimal, got {type(value).__name__}.")
    if isinstance(value, Decimal):
        # Finite check first: comparing a signalling NaN would raise InvalidOperation.
        if not value.is_finite():
            raise ValueError(f"Usage {meter!r} must be finite, got {value}.")
        if meter != "audio_seconds" and value != value.to_integral_value():
            raise ValueError(f"Usage {meter!r} must be a whole number, got {value}.")
        quantity = value
    else:
        quantity = Decimal(value)
    if quantity < 0:
        raise ValueError(f"Usage {meter!r} must be non-negative, got {value}.")
    return quantity


def _select_tier(tiers: tuple[Tier, ...], input_tokens: int | Decimal) -> Tier | None:
    """Highest tier whose threshold the total input strictly exceeds (genai-prices rule)."""
    # tiers are sorted ascending by Rates.__post_init__, so scan from the top.
    for tier in reversed(tiers):
        if input_tokens > tier.threshold:
            return tier
    return None


def price_usage(rates: Rates, usage: Mapping[str, int | Decimal]) -> CostBreakdown:
    """Price ``usage`` with ``rates`` and return an exact per-meter breakdown.

    ``usage`` is expected to come from :func:`costs.pricing.normalize.normalize_usage`; meters
    that are missing count as 0 and keys outside :data:`METERS` are ignored. The function still
    defends the money invariants: it raises ``TypeError`` for float/bool quantities and
    ``ValueError`` for negative quantities or subsets that exceed their totals (which would
    otherwise produce a negative line).

    See the module docstring for the billing, fallback, tier and rounding rules.
    """
    quantities = _fast_quantities(usage)
    if quantities is None:  # anything unusual: the checking path, and its exact errors
        quantities = tuple(_quantity(usage, meter) for meter in METERS)
    # Positions as in METERS: the two totals, then their subsets.
    inp, out, cached, cache_write, in_audio, out_audio = quantities[:6]

    input_subsets = cached + cache_write + in_audio
    output_subsets = out_audio
    if input_subsets > inp:
        raise ValueError(
            "cached_input_tokens + cache_write_tokens + input_audio_tokens "
            f"({Decimal(input_subsets)}) exceeds input_tokens ({Decimal(inp)})."
        )
    if output_subsets > out:
        raise ValueError(
            f"output_audio_tokens ({Decimal(output_subsets)}) exceeds output_tokens "
            f"({Decimal(out)})."
        )

    # The tier is chosen by TOTAL input (cached and audio included), like genai-prices.
    tier = _select_tier(rates.tiers, inp)
    effective = rates.effective[tier.threshold if tier is not None else None]

    lines: dict[str, Decimal] = {}
    unpriced: list[str] = []
    # What is actually billed at each meter's rate: the parents lose their subsets.
    billed = (inp - input_subsets, out - output_subsets, *quantities[2:])
    for meter, quantity, rate in zip(METERS, billed, effective, strict=True):
        if quantity == 0:
            continue
        if rate is None:
            unpriced.append(meter)
            lines[meter] = _ZERO_MONEY
            continue
        lines[meter] = _EXACT_CONTEXT.multiply(quantity, rate).quantize(
            _MONEY_QUANTUM, context=_QUANTIZE_CONTEXT
        )

    total = _ZERO_MONEY
    for line in lines.values():
        total = _EXACT_CONTEXT.add(total, line)

    return CostBreakdown(
        total=total,
        lines=lines,
        tier=tier.threshold if tier is not None else None,
        unpriced_meters=tuple(unpriced),
    )


def _fast_quantities(usage: Mapping[str, int | Decimal]) -> tuple[int | Decimal, ...] | None:
    """The meters as they are when every one is already a plain non-negative int
    (``audio_seconds`` also a finite non-negative Decimal), as normalize_usage
    hands them over; None otherwise, for :func:`_quantity` to check one by one."""
    values = tuple(usage.get(meter, 0) for meter in METERS)
    for meter, value in zip(METERS, values, strict=True):
        if type(value) is int:
            if value < 0:
                return None
        elif not (
            meter == "audio_seconds" and type(value) is Decimal and value.is_finite() and value >= 0
        ):
            return None
    return values
