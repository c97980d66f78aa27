"""Request prices: exact Decimal arithmetic, rounded half-even to whole nano-USD once per request."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from regate.compiler.model import Deployment
from regate.enforcer.pricing import PRICE_TABLE, Prices, cost_nanos, is_priced, litellm_prices, quote

MILLION = 1_000_000


def _deployment(upstream: str, input_cost=None, output_cost=None) -> Deployment:
    return Deployment(
        model_name="public-name", provider="openai", upstream_model=upstream,
        input_cost_per_token=input_cost, output_cost_per_token=output_cost,
    )


# OpenAI list prices in USD per 1M tokens (input, output).
PUBLISHED = {
    "gpt-4o": ("2.50", "10.00"),
    "gpt-4o-mini": ("0.15", "0.60"),
    "gpt-4.1": ("2.00", "8.00"),
    "gpt-4.1-mini": ("0.40", "1.60"),
    "gpt-3.5-turbo": ("0.50", "1.50"),
    "o3-mini": ("1.10", "4.40"),
    "o1": ("15.00", "60.00"),
    "o4-mini": ("1.10", "4.40"),
    "gpt-4.1-nano": ("0.10", "0.40"),
    "text-embedding-3-small": ("0.02", "0"),
    "text-embedding-3-large": ("0.13", "0"),
    "text-embedding-ada-002": ("0.10", "0"),
}


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_litellms_table_has_the_published_prices(model):
    per_million_in, per_million_out = (Decimal(p) for p in PUBLISHED[model])
    assert cost_nanos(model, MILLION, 0) == int(per_million_in * 10**9)
    assert cost_nanos(model, 0, MILLION) == int(per_million_out * 10**9)
    assert quote(_deployment(model), 1, 1) == quote(model, 1, 1)
    assert quote(model, 1, 1).priced and quote(model, 1, 1).source == "builtin"
    assert all(isinstance(p, Decimal) for p in (litellm_prices()[model].input_per_token, litellm_prices()[model].output_per_token))


def test_the_table_is_read_exactly_never_as_floats():
    # 1.5e-07 as a float is 1.49999999999999993...e-07: a float read would be off in the 24th digit.
    assert litellm_prices()["gpt-4o-mini"].input_per_token == Decimal("1.5E-7") != Decimal(1.5e-7)
    table = json.loads(PRICE_TABLE.read_text(), parse_float=Decimal)
    assert table["about"]["source"].startswith("LiteLLM 1.80.0")  # which release, and how to refresh it
    assert "scripts/refresh-prices" in table["about"]["refresh"]
    assert {e["litellm_provider"] for e in table["models"].values()} == {"openai", "text-completion-openai", "azure"}


def test_azure_is_priced_by_its_base_model():
    azure = Deployment(model_name="prod", provider="azure", upstream_model="my-gpt4o-deployment", base_model="azure/gpt-4o")
    assert quote(azure, MILLION, MILLION) == quote("azure/gpt-4o", MILLION, MILLION)
    assert cost_nanos(azure, MILLION, 0) == 2_500_000_000
    bare = Deployment(model_name="prod", provider="azure", upstream_model="d", base_model="gpt-4o-mini-2024-07-18")
    assert cost_nanos(bare, MILLION, 0) == 165_000_000  # azure/gpt-4o-mini-2024-07-18, Azure's own price
    named = Deployment(model_name="prod", provider="azure", upstream_model="gpt-4o")  # no base_model: the deployment name
    assert quote(named, 1, 1) == quote("azure/gpt-4o", 1, 1)
    configured = Deployment(model_name="prod", provider="azure", upstream_model="d", base_model="azure/gpt-4o",
                            input_cost_per_token=Decimal("0.000001"))
    assert cost_nanos(configured, MILLION, 0) == 1_000_000_000  # model_info prices still win


def test_gpt_4o_request_to_the_nano():
    # 1234 * 2.5e-6 + 567 * 1e-5 = 0.003085 + 0.00567 = 0.008755 USD
    assert cost_nanos(_deployment("gpt-4o"), 1234, 567) == 8_755_000


def test_configured_prices_win_over_the_table():
    d = _deployment("gpt-4o", Decimal("0.000001"), Decimal("0.000002"))
    q = quote(d, 1000, 200)
    assert q.nanos == 1_400_000 and q.priced and q.source == "config"


def test_a_missing_configured_side_falls_back_to_the_table():
    d = _deployment("gpt-4o", input_cost=Decimal("0.000001"))
    q = quote(d, 1000, 200)
    assert q.nanos == 1_000_000 + 2_000_000  # 1000 * 1e-6 configured + 200 * 1e-5 built in
    assert q.priced and q.source == "builtin+config"  # "builtin": LiteLLM's table shipped with regate


def test_unknown_models_are_unpriced_and_say_so():
    q = quote(_deployment("my-azure-deployment"), 1000, 1000)
    assert q == type(q)(nanos=0, priced=False, source="unpriced")
    assert not is_priced(_deployment("my-azure-deployment"))
    assert is_priced(_deployment("gpt-4o"))
    # The public model name is not a price key: aliases may point at any upstream.
    assert cost_nanos(Deployment(model_name="gpt-4o", provider="azure", upstream_model="prod-deploy"), 10, 10) == 0
    partial = quote(Prices(Decimal("0.000001"), None), 1000, 1000)
    assert partial.nanos == 1_000_000 and not partial.priced and partial.source == "partial"


def test_rounding_is_half_even_and_once_per_request():
    half_nano = Prices(Decimal("0.0000000005"), Decimal("0"))
    assert [cost_nanos(half_nano, n, 0) for n in (1, 2, 3, 5, 7)] == [0, 1, 2, 2, 4]  # 0.5→0, 1.5→2, 2.5→2, 3.5→4
    # 0.4 + 0.4 nano: rounding each side would give 0, rounding the request gives 1.
    four_tenths = Prices(Decimal("0.0000000004"), Decimal("0.0000000004"))
    assert cost_nanos(four_tenths, 1, 1) == 1


def test_arithmetic_is_exact_for_long_prices_and_large_counts():
    price = Prices(Decimal("1.23456789012345678901234567890E-7"), Decimal("0"))
    # 1e9 tokens * 1.2345...e-7 USD = 123.456789012345678901234567890 USD = 123456789012.3456... nanos
    assert cost_nanos(price, 10**9, 0) == 123_456_789_012
    assert cost_nanos("gpt-4o", 10**12, 10**12) == 12_500_000 * 10**9  # $12.5M, exact


def test_floats_and_bad_inputs_are_refused():
    with pytest.raises(TypeError):
        quote(Prices(2.5e-6, None), 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        quote(Prices(Decimal("-1"), None), 1, 1)
    with pytest.raises(ValueError):
        quote(Prices(Decimal("NaN"), None), 1, 1)
    for bad in (-1, 1.0, True, "3"):
        with pytest.raises(ValueError):
            cost_nanos("gpt-4o", bad, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cost_nanos(42, 1, 1)  # type: ignore[arg-type]
