"""Budget durations (`30s`, `15m`, `12h`, `1d`, `1w`, `1mo`) and the budget periods they define.

A period is a pure function of the duration and the clock, so every worker and replica
agrees on it and it survives restarts without any stored state. Periods are aligned to
UTC calendar boundaries, as LiteLLM aligns its standard resets: seconds, minutes, hours,
days and weeks count from Monday 1970-01-05 00:00 UTC (`1d` resets at midnight UTC, `1w`
on Mondays, `1h` on the hour, `30m` at :00 and :30); `Nmo` counts whole calendar months
from January 1970 (`1mo` resets on the 1st at midnight UTC). The first period of a new
budget is therefore usually shorter than the duration.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

# The grammar, shared with schemas/config.schema.json (pattern of `duration`).
DURATION_PATTERN = r"^([1-9][0-9]{0,5})(s|m|h|d|w|mo)$"
_DURATION = re.compile(DURATION_PATTERN)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ORIGIN = 4 * 86400  # 1970-01-05T00:00:00Z, a Monday


class DurationError(ValueError):
    """A duration that does not match `<1-999999><s|m|h|d|w|mo>`."""


@dataclass(frozen=True)
class Duration:
    count: int
    unit: str  # s | m | h | d | w | mo

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    @property
    def approx_seconds(self) -> int:
        """Length in seconds (a month counts 31 days): for comparing durations with each other."""
        return self.count * (31 * 86400 if self.unit == "mo" else _SECONDS[self.unit])

    def period_start(self, at: float) -> int:
        """Epoch second at which the period containing `at` (epoch seconds) began."""
        second = math.floor(at)  # not fromtimestamp(at): it rounds 23:59:59.9999995 up into the next month
        if self.unit == "mo":
            when = datetime.fromtimestamp(second, timezone.utc)
            month = (when.year - 1970) * 12 + when.month - 1
            return _month_start(month - month % self.count)
        length = self.count * _SECONDS[self.unit]
        return _ORIGIN + (second - _ORIGIN) // length * length

    def period_end(self, at: float) -> int:
        """Epoch second at which the period containing `at` ends (the budget's next reset)."""
        start = self.period_start(at)
        if self.unit == "mo":
            when = datetime.fromtimestamp(start, timezone.utc)
            return _month_start((when.year - 1970) * 12 + when.month - 1 + self.count)
        return start + self.count * _SECONDS[self.unit]


def _month_start(month_index: int) -> int:
    year, month = divmod(month_index, 12)
    return int(datetime(1970 + year, month + 1, 1, tzinfo=timezone.utc).timestamp())


def parse_duration(text: object) -> Duration:
    """`30s` → Duration(30, "s"). Raises DurationError (with the accepted forms) for anything else."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise DurationError("a duration is a whole number 1-999999 followed by s, m, h, d, w or mo (30s, 15m, 12h, 30d, 1mo)")
    return Duration(int(match.group(1)), match.group(2))


def lifetime_period_start(duration: Duration | None, at: float) -> int:
    """The period start for spend accounting: 0 (the whole lifetime) for a budget without a duration."""
    return duration.period_start(at) if duration is not None else 0
