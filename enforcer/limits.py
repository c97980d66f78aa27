"""The budget and rate-limit fields of management bodies (LiteLLM's names), their defaults and bounds.

`max_budget` (USD, a number >= 0), `budget_duration` (`30s` ... `1mo`), `tpm_limit`,
`rpm_limit`, `max_parallel_requests` (whole numbers >= 0); `null` clears a field. Parsed into
the store's form: `max_budget_nanos` (integer nano-USD) and the rest as given. Every refusal
is a 400 that names the field.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from regate.common.durations import DurationError, parse_duration
from regate.common.errors import BadRequestError
from regate.common.money import nanos_to_usd, usd_to_nanos

FIELDS = ("max_budget", "budget_duration", "tpm_limit", "rpm_limit", "max_parallel_requests")
# What _body() accepts for each field (management.py checks the JSON type before parsing).
BODY_TYPES: dict[str, Any] = {"max_budget": (int, float), "budget_duration": str, "tpm_limit": int,
                              "rpm_limit": int, "max_parallel_requests": int}
_COUNTS = ("tpm_limit", "rpm_limit", "max_parallel_requests")
_MAX_COUNT = 2**53  # what every JSON client can represent exactly


_NUMBER = (int, float, Decimal)


def _usd(value: Any) -> Decimal:
    # A float from the JSON parser: its shortest repr is what the client wrote (10.5), not its binary expansion.
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def parse(body: Mapping[str, Any]) -> dict[str, Any]:
    """The limit fields present in `body`, in the store's form (None clears a field)."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        if name not in body:
            continue
        value = body[name]
        if value is None:
            out["max_budget_nanos" if name == "max_budget" else name] = None
        elif name == "max_budget":
            if isinstance(value, bool) or not isinstance(value, _NUMBER) or not _usd(value).is_finite() or _usd(value) < 0:
                raise BadRequestError("field 'max_budget' must be a non-negative number of USD", code="invalid_limit")
            try:
                out["max_budget_nanos"] = usd_to_nanos(_usd(value))
            except ValueError:
                raise BadRequestError("field 'max_budget' is too large", code="invalid_limit") from None
        elif name == "budget_duration":
            try:
                out[name] = str(parse_duration(value))
            except DurationError as e:
                raise BadRequestError(f"field 'budget_duration' is not a duration: {e}", code="invalid_limit") from None
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
            raise BadRequestError(f"field '{name}' must be a whole number >= 0", code="invalid_limit")
        else:
            out[name] = value
    return out


def with_defaults(body: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """litellm_settings.default_key_generate_params for the fields the body leaves out (or null)."""
    filled = dict(body)
    for name, value in defaults.items():
        if filled.get(name) is None or (name == "models" and filled.get(name) == []):
            filled[name] = value
    return filled


def check_bounds(body: dict[str, Any], bounds: Mapping[str, Any], *, fill: bool) -> dict[str, Any]:
    """litellm_settings.upperbound_key_generate_params: a value above its bound is a 400 (LiteLLM's
    message); with `fill` (a new key) a field left out gets the bound, as in LiteLLM."""
    checked = dict(body)
    for name, bound in bounds.items():
        value = checked.get(name)
        if value is None:
            if fill:
                checked[name] = bound
            elif name in checked:
                raise BadRequestError(f"field '{name}' cannot be removed: upperbound_key_generate_params sets "
                                      f"its largest value ({bound})", code="over_upperbound")
            continue
        if name in ("budget_duration", "duration"):
            over = _seconds(name, value) > parse_duration(bound).approx_seconds
        elif isinstance(value, bool) or not isinstance(value, _NUMBER):
            continue  # parse() refuses it with its own message
        else:
            over = _usd(value) > Decimal(bound)
        if over:
            raise BadRequestError(f"field '{name}' is over max limit set in config - user_value={value}; "
                                  f"max_value={bound}", code="over_upperbound")
    return checked


def _seconds(name: str, value: Any) -> int:
    try:
        return parse_duration(value).approx_seconds
    except DurationError as e:
        raise BadRequestError(f"field '{name}' is not a duration: {e}", code="invalid_limit") from None


def loosened(current: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> list[str]:
    """The fields (LiteLLM's names) that `changes` (store form) would loosen against `current`:
    a limit removed or raised, or the budget period changed (another period restarts or
    stretches what the budget counts)."""
    current = current or {}
    found = []
    for name, value in changes.items():
        before = current.get(name)
        if name == "budget_duration":
            if value != before:
                found.append(name)
        elif before is not None and (value is None or value > before):
            found.append("max_budget" if name == "max_budget_nanos" else name)
    return found


def view(row: Mapping[str, Any] | None, standing=None) -> dict[str, Any]:
    """The limit fields of an info answer, LiteLLM's names (max_budget in USD), plus the current
    period's spend and when it resets."""
    row = row or {}
    nanos = row.get("max_budget_nanos")
    doc = {
        "max_budget": None if nanos is None else nanos_to_usd(nanos),
        "max_budget_nanos": nanos,
        "budget_duration": row.get("budget_duration"),
        "tpm_limit": row.get("tpm_limit"),
        "rpm_limit": row.get("rpm_limit"),
        "max_parallel_requests": row.get("max_parallel_requests"),
    }
    if standing is not None:
        doc.update(budget_spend=nanos_to_usd(standing.spend_nanos), budget_spend_nanos=standing.spend_nanos,
                   budget_reset_at=standing.fact()["reset_at"])
    return doc
