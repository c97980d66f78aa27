"""One request's usage and cost, as written to the spend log (and to the spool while the store is down)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime

_MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True)
class SpendRecord:
    """One request's usage and cost, as written to spend_logs. Money is integer nano-USD."""

    request_id: str
    started_at: datetime
    ended_at: datetime
    model: str
    route: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    spend_nanos: int
    user_id: str | None = None
    team_id: str | None = None
    organization_id: str | None = None
    end_user_id: str | None = None
    key_hash: str | None = None
    status: str = "success"
    usage_estimated: bool = False  # tokens counted by regate: the upstream's usage never came

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValueError("request_id must be a non-empty string")
        for name in ("started_at", "ended_at"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ValueError(f"{name} must be a timezone-aware datetime")
        for name in ("prompt_tokens", "completion_tokens", "total_tokens", "spend_nanos"):
            value = getattr(self, name)
            # bool is an int subclass and float is never money: both are refused.
            if type(value) is not int or not 0 <= value <= _MAX_BIGINT:
                raise ValueError(f"{name} must be an int in [0, 2**63), got {type(value).__name__}")
        if type(self.usage_estimated) is not bool:
            raise ValueError("usage_estimated must be a bool")
        # Refuse here what a database would refuse later: a record the store cannot take
        # would otherwise sit in the queue and the spool as a poison batch.
        for name in ("request_id", "model", "route", "status", "user_id", "team_id", "organization_id", "end_user_id", "key_hash"):
            value = getattr(self, name)
            if value is None and name not in ("request_id", "model", "route", "status"):
                continue
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            if "\x00" in value:
                raise ValueError(f"{name} must not contain NUL characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{name} is not valid Unicode text") from None

    def to_json(self) -> str:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["ended_at"] = self.ended_at.isoformat()
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "SpendRecord":
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("a spend record must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown spend record fields: {sorted(unknown)}")
        for name in ("started_at", "ended_at"):
            if isinstance(data.get(name), str):
                data[name] = datetime.fromisoformat(data[name])
        return cls(**data)
