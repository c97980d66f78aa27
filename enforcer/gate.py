"""The gate every request passes before any handler: canonical path, credential, decision.

Only /health/* and /metrics are answered without a decision (probes must work while
OPA is down; they carry no identities). Everything else, including unknown paths,
gets a decision first, so a 404 never tells an anonymous caller which routes exist.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass

from flask import Flask, current_app, g, request

from regate.common.errors import BadRequestError, RegateError

from . import metrics
from .bodies import json_body
from .credentials import Credential
from .decisions import Decision
from .paths import NonCanonicalPath, canonical_path, request_target
from .responses import error_response, from_error
from .team_facts import requested_team

log = logging.getLogger("regate.access")

EXEMPT_PREFIXES = ("/health/",)
EXEMPT_PATHS = ("/metrics",)
MAX_MODEL_NAME = 256
# Routes whose JSON body names the model the decision may depend on (virtual-key model lists).
MODEL_ROUTES = frozenset(
    {"/chat/completions", "/v1/chat/completions", "/completions", "/v1/completions", "/embeddings", "/v1/embeddings"}
)


@dataclass(frozen=True)
class Auth:
    """What the gate established, for the handlers."""

    credential: Credential
    decision: Decision
    path: str

    @property
    def subject(self) -> dict:
        return self.decision.subject

    @property
    def is_admin(self) -> bool:
        return self.decision.role == "proxy_admin"


def _exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


def _request_model(path: str):
    if request.method != "POST" or path not in MODEL_ROUTES:
        return None
    body = json_body()
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and len(model) > MAX_MODEL_NAME:
        # Refused before OPA: the model is part of the decision's input, and of its cache key.
        raise BadRequestError(f"the model name is longer than {MAX_MODEL_NAME} characters", code="model_name_too_long")
    g.model = model if isinstance(model, str) else None
    return g.model


def _decide(components, credential: Credential, path: str) -> Decision:
    team = requested_team(request.headers)
    input_doc = {
        "request": {"method": request.method, "path": path, "model": _request_model(path), "requested_team": team},
        "credential": credential.as_input(),
    }
    facts = components.facts.for_credential(credential, team)
    if request.method == "POST" and path in MODEL_ROUTES:
        # Spending routes: the budgets of every principal the request may spend for, for the policy
        # (it selects the team the request runs as); their rate limits, for the proxy.
        team_ids = (facts or {}).get("teams", {})
        g.standing = components.budgets.standing(components.budgets.principals(credential, team_ids))
        budgets = components.budgets.facts(g.standing)
        if budgets is not None:
            facts = {**(facts or {}), "budgets": budgets}
    if facts is not None:
        input_doc["facts"] = facts
    decision = components.decisions.decide(input_doc)
    metrics.DECISIONS.labels("allow" if decision.allow else "deny", decision.reason or "").inc()
    return decision


def gate():
    g.request_id = uuid.uuid4().hex
    g.started = time.perf_counter()
    g.reason = None
    metrics.IN_FLIGHT.inc()
    if _exempt(request.path):
        return None
    components = current_app.extensions["regate"]
    try:
        path = canonical_path(request_target(request.environ))
        if request.environ.get("SCRIPT_NAME") or request.path != path:
            # Flask dispatches on PATH_INFO, which a WSGI server may shorten by a SCRIPT_NAME
            # header (gunicorn's default trusts loopback peers with it; `regate serve` trusts
            # none): whatever server runs the app, the decided path must be the dispatched one.
            raise NonCanonicalPath("the request would be routed to another path than its target (SCRIPT_NAME)")
        credential = components.authenticator.authenticate(request.headers)
        decision = _decide(components, credential, path)
    except RegateError as e:
        if e.code.startswith("decision_"):
            metrics.DECISIONS.labels("error", e.code).inc()
        g.reason = e.code
        return from_error(e)
    g.decision = decision
    if not decision.allow:
        g.reason = decision.reason
        if decision.reason == "state_unavailable":
            components.block_sync.request_full_sync()
        return error_response(decision.status, decision.message, decision.reason)
    try:
        _upsert(components, decision)
    except RegateError as e:
        g.reason = e.code
        return from_error(e)
    g.auth = Auth(credential, decision, path)
    return None


def _upsert(components, decision: Decision) -> None:
    """Create the user and the team the policy asks for (user_id_upsert, team_id_upsert)."""
    subject = decision.subject
    if decision.upsert_user:
        components.store.create_user(subject["user_id"], email=subject["email"], if_missing=True)
        components.facts.created(subject["user_id"])
    if decision.upsert_team:
        components.store.create_team(subject["team_id"], if_missing=True)
        components.facts.team_changed(subject["team_id"])


def _access_fields(response) -> dict:
    decision = g.get("decision")
    subject = decision.subject if decision else {}
    return {
        "request_id": g.get("request_id"),
        "decision_id": decision.decision_id if decision else None,
        "method": request.method,
        "path": request_target(request.environ).split("?", 1)[0][:256],
        "status": response.status_code,
        "reason": g.get("reason"),
        "role": decision.role if decision else None,
        "user_id": subject.get("user_id"),
        "team_id": subject.get("team_id"),
        "model": g.get("model"),
    }


def finish(response):
    if "started" not in g:  # the gate did not run (e.g. a routing error before it)
        return response
    response.headers["X-Request-ID"] = g.request_id
    metrics.REQUESTS.labels(str(response.status_code)).inc()
    fields = _access_fields(response)  # read now: the request context is gone when the stream ends
    started = g.started

    def closed():
        metrics.IN_FLIGHT.dec()
        fields["ms"] = round((time.perf_counter() - started) * 1000, 2)
        log.info(json.dumps(fields, separators=(",", ":")))

    response.call_on_close(closed)
    return response


def init_app(app: Flask) -> None:
    app.before_request(gate)
    app.after_request(finish)
