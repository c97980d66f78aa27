"""What a request cost, in integer nano-USD, computed exactly.

Prices per token come from the deployment's `model_info` (`input_cost_per_token`,
`output_cost_per_token`, Decimal USD), else from the small built-in table below,
keyed by the upstream model name. Arithmetic is exact Decimal; the result is
rounded half-even to whole nano-USD once per request. A side with no known price
counts as 0 and the quote says the request was not (fully) priced, so the caller
can log or count it.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Mapping

from regate.common.money import NANOS_PER_USD
from regate.compiler.model import Deployment

# Exact arithmetic: prec far above any product of a token count and a price; Inexact traps.
_EXACT = decimal.Context(prec=200, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])


@dataclass(frozen=True)
class Prices:
    """USD per token; None means unknown."""

    input_per_token: Decimal | None
    output_per_token: Decimal | None


@dataclass(frozen=True)
class Quote:
    """The cost of one request and how it was priced."""

    nanos: int
    priced: bool  # both prices were known
    source: str  # "config", "builtin", "config+builtin", "partial" or "unpriced"


def _per_million(input_usd: str, output_usd: str) -> Prices:
    return Prices(Decimal(input_usd).scaleb(-6), Decimal(output_usd).scaleb(-6))


# OpenAI's published list prices, USD per 1M tokens (standard tier, no cache discounts).
# Only exact names match: a dated snapshot with a different price must be listed itself.
BUILTIN_PRICES: Mapping[str, Prices] = MappingProxyType({
    "gpt-4o": _per_million("2.50", "10.00"),
    "gpt-4o-2024-05-13": _per_million("5.00", "15.00"),
    "gpt-4o-2024-08-06": _per_million("2.50", "10.00"),
    "gpt-4o-2024-11-20": _per_million("2.50", "10.00"),
    "gpt-4o-mini": _per_million("0.15", "0.60"),
    "gpt-4o-mini-2024-07-18": _per_million("0.15", "0.60"),
    "gpt-4.1": _per_million("2.00", "8.00"),
    "gpt-4.1-2025-04-14": _per_million("2.00", "8.00"),
    "gpt-4.1-mini": _per_million("0.40", "1.60"),
    "gpt-4.1-mini-2025-04-14": _per_million("0.40", "1.60"),
    "gpt-3.5-turbo": _per_million("0.50", "1.50"),
    "gpt-3.5-turbo-0125": _per_million("0.50", "1.50"),
    "o3-mini": _per_million("1.10", "4.40"),
    "o3-mini-2025-01-31": _per_million("1.10", "4.40"),
    "text-embedding-3-small": _per_million("0.02", "0"),
    "text-embedding-3-large": _per_million("0.13", "0"),
    "text-embedding-ada-002": _per_million("0.10", "0"),
})


def _check_price(name: str, value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{name} must be a Decimal, int or str, never a float")
    try:
        price = Decimal(value) if isinstance(value, (int, str)) else value
    except decimal.InvalidOperation:
        raise ValueError(f"{name} is not a number") from None
    if not isinstance(price, Decimal) or not price.is_finite() or price < 0:
        raise ValueError(f"{name} must be a finite, non-negative number")
    return price


def _check_tokens(name: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a non-negative int")
    return value


def quote(deployment_or_prices: Deployment | Prices | str, prompt_tokens: int, completion_tokens: int) -> Quote:
    """Price one request. Accepts a Deployment, explicit Prices, or an upstream model name."""
    prompt_tokens = _check_tokens("prompt_tokens", prompt_tokens)
    completion_tokens = _check_tokens("completion_tokens", completion_tokens)
    if isinstance(deployment_or_prices, Deployment):
        configured = Prices(
            _check_price("input_cost_per_token", deployment_or_prices.input_cost_per_token),
            _check_price("output_cost_per_token", deployment_or_prices.output_cost_per_token),
        )
        builtin = BUILTIN_PRICES.get(deployment_or_prices.upstream_model)
    elif isinstance(deployment_or_prices, Prices):
        configured = Prices(
            _check_price("input_per_token", deployment_or_prices.input_per_token),
            _check_price("output_per_token", deployment_or_prices.output_per_token),
        )
        builtin = None
    elif isinstance(deployment_or_prices, str):
        configured, builtin = Prices(None, None), BUILTIN_PRICES.get(deployment_or_prices)
    else:
        raise TypeError("quote() takes a Deployment, Prices or a model name")

    sources = set()
    resolved = []
    for side in ("input_per_token", "output_per_token"):
        price = getattr(configured, side)
        if price is not None:
            sources.add("config")
        elif builtin is not None:
            price = getattr(builtin, side)
            sources.add("builtin")
        resolved.append(price)
    input_price, output_price = resolved

    with decimal.localcontext(_EXACT):
        usd = (input_price or Decimal(0)) * prompt_tokens + (output_price or Decimal(0)) * completion_tokens
        nanos = int((usd * NANOS_PER_USD).to_integral_value(rounding=decimal.ROUND_HALF_EVEN))

    priced = input_price is not None and output_price is not None
    if not sources:
        source = "unpriced"
    elif not priced:
        source = "partial"
    else:
        source = "+".join(sorted(sources))
    return Quote(nanos=nanos, priced=priced, source=source)


def cost_nanos(deployment_or_prices: Deployment | Prices | str, prompt_tokens: int, completion_tokens: int) -> int:
    """The request's cost in nano-USD (0 for an unknown price; use `quote` to learn whether it was priced)."""
    return quote(deployment_or_prices, prompt_tokens, completion_tokens).nanos


def is_priced(deployment: Deployment) -> bool:
    """Whether both token prices are known for this deployment (for a start-up warning)."""
    return quote(deployment, 0, 0).priced
