"""Money is integer nano-USD (1e-9 USD) everywhere: exact, and fine enough for per-token prices."""

from __future__ import annotations

import decimal
from decimal import Decimal

NANOS_PER_USD = 10**9
MAX_NANOS = 2**63 - 1  # what a BIGINT column holds


def nanos_to_usd(nanos: int) -> float:
    """For display in API answers (the exact `spend_nanos` is shown beside it)."""
    return float(Decimal(nanos) / NANOS_PER_USD)


def usd_to_nanos(usd: Decimal | int | str) -> int:
    """An amount of USD as whole nano-USD, rounded half-even below a nano-dollar.

    Raises ValueError for anything that is not a finite amount a BIGINT can hold (floats
    are refused: a caller turns a parsed float into Decimal(repr(value)) first).
    """
    if isinstance(usd, (bool, float)):
        raise ValueError("an amount of USD must be a Decimal, int or str, never a float")
    try:
        amount = Decimal(usd)
    except decimal.InvalidOperation:
        raise ValueError("not a number") from None
    if not amount.is_finite():
        raise ValueError("not a finite number")
    nanos = int((amount * NANOS_PER_USD).to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
    if abs(nanos) > MAX_NANOS:
        raise ValueError("too large")
    return nanos
