"""Money is integer nano-USD (1e-9 USD) everywhere: exact, and fine enough for per-token prices."""

from __future__ import annotations

from decimal import Decimal

NANOS_PER_USD = 10**9


def nanos_to_usd(nanos: int) -> float:
    """For display in API answers (the exact `spend_nanos` is shown beside it)."""
    return float(Decimal(nanos) / NANOS_PER_USD)
