"""Budget durations and the limit fields of management bodies: untrusted text and JSON, checked
against small reference implementations with hypothesis, and the periods they define."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from regate.common.durations import DURATION_PATTERN, DurationError, parse_duration
from regate.common.errors import BadRequestError
from regate.enforcer import limits

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def reference_duration(text: str):
    """What the grammar means, spelled out: 1-6 ASCII digits without a leading 0, then a unit."""
    for unit in ("mo", "s", "m", "h", "d", "w"):
        if text.endswith(unit):
            digits = text[: -len(unit)]
            if 1 <= len(digits) <= 6 and all(c in "0123456789" for c in digits) and digits[0] != "0":
                return int(digits), unit
    return None


durations = st.one_of(
    st.text(max_size=10),
    st.builds(lambda n, u: f"{n}{u}", st.integers(-5, 10**7), st.sampled_from(["s", "m", "h", "d", "w", "mo", "y", "", "ms"])),
)


@given(durations)
def test_parse_duration_matches_the_reference(text):
    expected = reference_duration(text)
    if expected is None:
        with pytest.raises(DurationError):
            parse_duration(text)
    else:
        parsed = parse_duration(text)
        assert (parsed.count, parsed.unit) == expected and str(parsed) == text


def test_the_schema_uses_the_same_grammar():
    import json

    from regate.compiler import resources

    schema = json.loads(resources.schema_path("config.schema.json").read_text())
    assert re.sub(r"[()]", "", schema["$defs"]["duration"]["pattern"]) == re.sub(r"[()]", "", DURATION_PATTERN)


instants = st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False)  # 1970 .. 2100


@given(st.integers(1, 5000), st.sampled_from(["s", "m", "h", "d", "w"]), instants)
def test_fixed_periods_contain_the_instant_and_align_to_the_epoch_monday(count, unit, at):
    d = parse_duration(f"{count}{unit}")
    start, end = d.period_start(at), d.period_end(at)
    assert start <= at < end and end - start == count * UNITS[unit]
    assert (start - 4 * 86400) % (count * UNITS[unit]) == 0  # 1970-01-05 00:00 UTC, a Monday
    assert d.period_start(end) == end  # the next period starts where this one ends


@given(st.integers(1, 24), instants)
@example(1, 2051222399.9999995)  # found by hypothesis: fromtimestamp() rounded it into the next month
def test_month_periods_start_on_the_first_at_midnight_utc(count, at):
    d = parse_duration(f"{count}mo")
    start, end = d.period_start(at), d.period_end(at)
    assert start <= at < end
    for edge in (start, end):
        when = datetime.fromtimestamp(edge, timezone.utc)
        assert (when.day, when.hour, when.minute, when.second) == (1, 0, 0, 0)
    first = datetime.fromtimestamp(start, timezone.utc)
    assert ((first.year - 1970) * 12 + first.month - 1) % count == 0


def test_common_durations_reset_where_litellm_resets_them():
    at = datetime(2026, 3, 18, 15, 42, 7, tzinfo=timezone.utc).timestamp()  # a Wednesday
    iso = lambda d: datetime.fromtimestamp(parse_duration(d).period_end(at), timezone.utc).isoformat()  # noqa: E731
    assert iso("1d") == "2026-03-19T00:00:00+00:00"  # midnight UTC
    assert iso("1w") == "2026-03-23T00:00:00+00:00"  # Monday
    assert iso("1h") == "2026-03-18T16:00:00+00:00"
    assert iso("30m") == "2026-03-18T16:00:00+00:00"
    assert iso("1mo") == "2026-04-01T00:00:00+00:00"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


def reference_limits(body: dict):
    """The store form the fields mean, or None when one of them is invalid."""
    out = {}
    for name in limits.FIELDS:
        if name not in body:
            continue
        value = body[name]
        key = "max_budget_nanos" if name == "max_budget" else name
        if value is None:
            out[key] = None
        elif name == "max_budget":
            if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
                return None
            nanos = Decimal(repr(value) if isinstance(value, float) else value) * 10**9
            if nanos >= 2**63:
                return None
            out[key] = int(nanos.to_integral_value())
        elif name == "budget_duration":
            if not isinstance(value, str) or reference_duration(value) is None:
                return None
            out[key] = value
        elif type(value) is not int or not 0 <= value <= 2**53:
            return None
        else:
            out[key] = value
    return out


@given(st.dictionaries(st.sampled_from(limits.FIELDS + ("other",)), json_values, max_size=6))
def test_limit_fields_parse_like_the_reference_or_are_400_naming_the_field(body):
    expected = reference_limits(body)
    if expected is None:
        with pytest.raises(BadRequestError) as refused:
            limits.parse(body)
        assert re.match(r"field '(max_budget|budget_duration|tpm_limit|rpm_limit|max_parallel_requests)' ", refused.value.message)
    else:
        assert limits.parse(body) == expected


def test_money_is_exact():
    assert limits.parse({"max_budget": 0.1}) == {"max_budget_nanos": 100_000_000}
    assert limits.parse({"max_budget": 1e-9}) == {"max_budget_nanos": 1}
    # Bodies are re-read with Decimal for max_budget (management._body): no float ever rounds it.
    assert limits.parse({"max_budget": Decimal("12345678.123456789")}) == {"max_budget_nanos": 12_345_678_123_456_789}


def test_bounds_and_defaults():
    bounds = {"max_budget": Decimal("100"), "rpm_limit": 600, "budget_duration": "30d"}
    assert limits.check_bounds({}, bounds, fill=True) == {"max_budget": Decimal("100"), "rpm_limit": 600, "budget_duration": "30d"}
    assert limits.check_bounds({"rpm_limit": 600}, bounds, fill=False) == {"rpm_limit": 600}
    with pytest.raises(BadRequestError, match="field 'budget_duration' is over max limit set in config - user_value=1mo; max_value=30d"):
        limits.check_bounds({"budget_duration": "1mo"}, bounds, fill=False)
    with pytest.raises(BadRequestError, match="field 'max_budget' is over max limit"):
        limits.check_bounds({"max_budget": 100.01}, bounds, fill=True)
    assert limits.with_defaults({"rpm_limit": None, "models": []}, {"rpm_limit": 5, "models": ["m"]}) == {"rpm_limit": 5, "models": ["m"]}
