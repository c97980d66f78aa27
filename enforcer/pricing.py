"""What a request cost, in integer nano-USD, computed exactly.

Prices per token come from the deployment's `model_info` (`input_cost_per_token`,
`output_cost_per_token`, Decimal USD), else from LiteLLM's price table (a filtered copy of
LiteLLM 1.80.0's model_prices_and_context_window JSON in model_prices.json, read as exact
Decimals; `scripts/refresh-prices` refreshes it): OpenAI models by their upstream name, Azure
deployments by `model_info.base_model` (as LiteLLM prices them), else by `azure/<deployment>`.
Arithmetic is exact Decimal; the result is rounded half-even to whole nano-USD once per
request. A side with no known price counts as 0 and the quote says the request was not
(fully) priced, so the caller can log or count it.
"""

from __future__ import annotations

import decimal
import json
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from regate.common.money import NANOS_PER_USD
from regate.compiler.model import Deployment

# Exact arithmetic: prec far above any product of a token count and a price; Inexact traps.
_EXACT = decimal.Context(prec=200, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
PRICE_TABLE = Path(__file__).with_name("model_prices.json")


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


@lru_cache(maxsize=1)
def litellm_prices() -> Mapping[str, Prices]:
    """LiteLLM's per-token prices by model key (`gpt-4o-mini`, `azure/gpt-4o`), exact."""
    table = json.loads(PRICE_TABLE.read_text(), parse_float=Decimal, parse_int=Decimal)
    return MappingProxyType({
        name: Prices(entry.get("input_cost_per_token"), entry.get("output_cost_per_token"))
        for name, entry in table["models"].items()
    })


def table_prices(deployment: Deployment) -> Prices | None:
    """The table's prices for a deployment, LiteLLM's way: Azure by base_model, OpenAI by model name."""
    table = litellm_prices()
    if deployment.provider == "azure":
        base = deployment.base_model.removeprefix("azure/") if deployment.base_model else None
        names = [f"azure/{base}", base] if base else []  # Azure's own price first, as LiteLLM looks it up
        names.append(f"azure/{deployment.upstream_model}")
    else:
        names = [deployment.base_model] if deployment.base_model else []
        names.append(deployment.upstream_model)
    return next((table[n] for n in names if n in table), None)


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
        builtin = table_prices(deployment_or_prices)
    elif isinstance(deployment_or_prices, Prices):
        configured = Prices(
            _check_price("input_per_token", deployment_or_prices.input_per_token),
            _check_price("output_per_token", deployment_or_prices.output_per_token),
        )
        builtin = None
    elif isinstance(deployment_or_prices, str):
        configured, builtin = Prices(None, None), litellm_prices().get(deployment_or_prices)
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
