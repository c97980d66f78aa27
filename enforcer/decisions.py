"""The OPA client: one pooled keep-alive connection set, a bounded timeout, strict results.

Anything but a well-formed decision raises DecisionError, which the enforcer turns
into 503: OPA down, slow, undefined or malformed never becomes an allow.

Not opa-python-client: it pulls in aiohttp/aiofiles, retries POSTs (doubling the
time bound), goes through requests (slower per call) and flattens OPA's answers
into exceptions without the body; a decision client is forty lines on the enforcer's
own HTTP/1.1 client (enforcer.http_client, shared with the upstream calls).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from regate.common.errors import DecisionError

from .http_client import ConnectionPool, ConnectTimeout, HTTPClientError, StaleConnection

DECISION_PATH = "/v1/data/regate/authz/decision"
STATE_PATH = "/v1/data/regate_state"
_JSON = {"Content-Type": "application/json"}
_SUBJECT_KEYS = ("user_id", "team_id", "org_id", "end_user_id", "email")
_MAX_ANSWER = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Answer:
    status: int
    data: bytes


@dataclass(frozen=True)
class Decision:
    allow: bool
    status: int
    reasons: tuple[str, ...]
    message: str
    role: str | None
    subject: dict[str, str | None]
    upsert_user: bool
    upsert_team: bool = False  # create subject.team_id's record (team_id_upsert)
    decision_id: str | None = None  # OPA's, when its decision log is on: the access log names it
    # On an allow: how much more the budgets that apply may be spent before the decision could
    # change (the decision cache reuses it for the same input while no spend grew as much); None: no bound.
    budget_headroom_nanos: int | None = None

    @property
    def reason(self) -> str | None:
        return self.reasons[0] if self.reasons else None


def parse_decision(result: Any) -> Decision:
    """Validate OPA's `result`; raise DecisionError unless every field is as the contract says."""
    if not isinstance(result, dict):
        raise DecisionError("the policy returned no decision (undefined)", code="decision_undefined")
    allow = result.get("allow")
    status = result.get("status")
    reasons = result.get("reasons")
    message = result.get("message")
    role = result.get("role")
    subject = result.get("subject")
    upsert = result.get("upsert_user")
    upsert_team = result.get("upsert_team")
    headroom = result.get("budget_headroom_nanos")  # absent from bundles of older regate versions: no bound
    well_formed = (
        isinstance(allow, bool)
        and isinstance(status, int) and not isinstance(status, bool)
        and isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)
        and isinstance(message, str)
        and (role is None or isinstance(role, str))
        and isinstance(subject, dict) and all(subject.get(k) is None or isinstance(subject.get(k), str) for k in _SUBJECT_KEYS)
        and isinstance(upsert, bool)
        and isinstance(upsert_team, bool)
        and (not upsert_team or (allow and isinstance(subject.get("team_id"), str)))  # a team to create is named
        and (headroom is None or _positive_int(headroom) and allow)  # a budget left on an allow only
        # An allow must be unambiguous: no reasons, status 200. A deny must carry a reason and an error status.
        and ((allow and status == 200 and not reasons) or (not allow and reasons and 400 <= status <= 599))
    )
    if not well_formed:
        raise DecisionError("the policy returned a malformed decision", code="decision_malformed")
    return Decision(allow, status, tuple(reasons), message, role,
                    {k: subject.get(k) for k in _SUBJECT_KEYS}, upsert, upsert_team, budget_headroom_nanos=headroom)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def encode_input(input_doc: dict) -> bytes:
    """The body of a decision request; equal documents give equal bytes (the decision cache's key).

    orjson: a token's claims and its team list are most of an input, which the standard
    encoder takes several times longer over. What orjson refuses (an integer beyond 64 bits,
    a lone surrogate) goes through the standard encoder, whose bytes are as deterministic.
    Non-finite numbers, which orjson would turn into null, never get here: the token parser
    refuses them.
    """
    try:
        return orjson.dumps({"input": input_doc}, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps({"input": input_doc}, separators=(",", ":"), sort_keys=True).encode()


class OpaClient:
    """Decisions and runtime-state writes against one OPA server."""

    def __init__(self, url: str, *, timeout: float = 1.0, maxsize: int = 64):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DecisionError(f"invalid OPA URL {url!r}", code="invalid_opa_url")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._pool = ConnectionPool(parts.scheme, parts.hostname, parts.port, maxsize=maxsize)

    def close(self) -> None:
        self._pool.close()

    def _send(self, method: str, path: str, body: bytes = b"", timeout: float | None = None,
              headers: dict[str, str] = _JSON) -> _Answer:
        # The timeout bounds the whole call: connect, request, answer and the one retry, which
        # is made only when a kept-alive connection turns out closed by OPA before any answer
        # byte (it may have dropped it while idle), never for a new connection or a timeout.
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        for attempt in (0, 1):
            try:
                response = self._pool.request(method, path, body, headers, connect_timeout=min(timeout, 0.5),
                                              timeout=timeout, deadline=deadline)
                try:
                    return _Answer(response.status, response.read(_MAX_ANSWER))
                finally:
                    response.release()
            except (ConnectTimeout, TimeoutError):
                raise DecisionError("the policy engine did not answer in time", code="decision_timeout") from None
            except StaleConnection:
                if attempt:
                    raise DecisionError("the policy engine is unreachable", code="decision_unavailable") from None
            except (HTTPClientError, OSError):
                raise DecisionError("the policy engine is unreachable", code="decision_unavailable") from None
        raise AssertionError("unreachable")

    def decide(self, input_doc: dict) -> Decision:
        return self.decide_encoded(encode_input(input_doc))

    def decide_encoded(self, body: bytes) -> Decision:
        """The decision for a request body made by encode_input."""
        response = self._send("POST", DECISION_PATH, body)
        if response.status != 200:
            raise DecisionError(f"the policy engine answered HTTP {response.status}", code="decision_unavailable")
        try:
            doc = orjson.loads(response.data)
        except ValueError:
            raise DecisionError("the policy engine answered with invalid JSON", code="decision_malformed") from None
        if not isinstance(doc, dict):
            return parse_decision(None)
        decision = parse_decision(doc.get("result"))
        decision_id = doc.get("decision_id")
        return replace(decision, decision_id=decision_id) if isinstance(decision_id, str) else decision

    def healthy(self) -> bool:
        """OPA is up and has activated its bundle."""
        try:
            return self._send("GET", "/health?bundles").status == 200
        except DecisionError:
            return False

    # runtime state under data.regate_state (outside the bundle's roots) ---------------
    def get_state(self, name: str) -> Any:
        """data.regate_state.<name>, or None when undefined (e.g. OPA restarted)."""
        response = self._send("GET", f"{STATE_PATH}/{quote(name, safe='')}")
        if response.status != 200:
            raise DecisionError(f"reading OPA state answered HTTP {response.status}", code="state_unavailable")
        return json.loads(response.data).get("result")

    def put_state(self, document: dict, timeout: float = 30.0, *, only_if_absent: bool = False) -> bool:
        """Write data.regate_state whole; with `only_if_absent`, only when OPA has none (atomic
        in OPA: `If-None-Match: *`). True when written, False when OPA already had a state."""
        body = json.dumps(document, separators=(",", ":")).encode()
        headers = {**_JSON, "If-None-Match": "*"} if only_if_absent else _JSON
        response = self._send("PUT", STATE_PATH, body, timeout=timeout, headers=headers)
        if response.status == 304 and only_if_absent:
            return False
        if response.status != 204:
            raise DecisionError(f"writing OPA state answered HTTP {response.status}", code="state_unavailable")
        return True

    def patch_blocked(self, team_id: str, blocked: bool) -> None:
        """Add or remove one team in data.regate_state.blocked_teams (JSON Patch on OPA's Data API)."""
        pointer = "/" + team_id.replace("~", "~0").replace("/", "~1")
        op = {"op": "add", "path": pointer, "value": True} if blocked else {"op": "remove", "path": pointer}
        response = self._send("PATCH", f"{STATE_PATH}/blocked_teams", json.dumps([op]).encode())
        if response.status == 204 or (not blocked and response.status == 404):
            return  # removing a team that is not there is already the wanted state
        raise DecisionError(f"patching OPA state answered HTTP {response.status}", code="state_unavailable")
