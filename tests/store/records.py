"""Spend records for store and writer tests, with costs computed independently in Decimal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

from regate.enforcer.spend_record import SpendRecord

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)

# gpt-4o list price, written out independently of enforcer.pricing.
GPT4O_IN = Decimal("0.0000025")
GPT4O_OUT = Decimal("0.00001")


def expected_nanos(prompt_tokens: int, completion_tokens: int, price_in: Decimal = GPT4O_IN, price_out: Decimal = GPT4O_OUT) -> int:
    usd = price_in * prompt_tokens + price_out * completion_tokens
    return int((usd * 1_000_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def make_record(
    request_id: str,
    *,
    prompt_tokens: int = 100,
    completion_tokens: int = 50,
    spend_nanos: int | None = None,
    offset_s: float = 0.0,
    **identities,
) -> SpendRecord:
    started = T0 + timedelta(seconds=offset_s)
    return SpendRecord(
        request_id=request_id,
        started_at=started,
        ended_at=started + timedelta(milliseconds=250),
        model="gpt-4o",
        route="/v1/chat/completions",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        spend_nanos=expected_nanos(prompt_tokens, completion_tokens) if spend_nanos is None else spend_nanos,
        **identities,
    )
