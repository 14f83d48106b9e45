"""Arithmetic on budget figures that can lie far apart (a limit of 10^-12
against a counter of 10^18, a projection over a period of a year from its
first microsecond), in a context wide enough for any two of them: Python's
default keeps 28 digits, and quantizing a wider result raised, failing every
answer that showed the budget."""

from __future__ import annotations

import decimal
from datetime import timedelta
from decimal import Decimal

# 60 digits: a counter's 30 and a limit's 12 places, with room to spare.
WIDE = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,  # Python's default
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
TENTH = Decimal("0.1")
MICROSECOND = timedelta(microseconds=1)


def percent_of(spent: Decimal, limit: Decimal) -> Decimal:
    """``spent`` as a percentage of ``limit`` (> 0), unrounded: what a
    threshold is compared with."""
    return WIDE.divide(WIDE.multiply(spent, 100), limit)


def to_tenth(percent: Decimal) -> Decimal:
    """A percentage as it is shown: to one place, half up."""
    return percent.quantize(TENTH, rounding=decimal.ROUND_HALF_UP, context=WIDE)


def percent_used(spent: Decimal, limit: Decimal) -> Decimal:
    """``spent`` as a percentage of ``limit``, as shown."""
    return to_tenth(percent_of(spent, limit))


def scaled(value: Decimal, numerator: int, denominator: int, places: Decimal) -> Decimal:
    """``value * numerator / denominator`` to ``places``, half to even
    (``denominator`` > 0)."""
    product = WIDE.multiply(value, numerator)
    return WIDE.divide(product, Decimal(denominator)).quantize(places, context=WIDE)
