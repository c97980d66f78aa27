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
from .ratelimit import limits_of
from .responses import error_response, from_error
from .team_facts import requested_team

log = logging.getLogger("regate.access")
_log_line = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps would build the encoder per line

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


def _request_model(req, ctx, path: str):
    if req.method != "POST" or path not in MODEL_ROUTES:
        return None
    body = json_body()
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and len(model) > MAX_MODEL_NAME:
        # Refused before OPA: the model is part of the decision's input, and of its cache key.
        raise BadRequestError(f"the model name is longer than {MAX_MODEL_NAME} characters", code="model_name_too_long")
    ctx.model = model if isinstance(model, str) else None
    return ctx.model


def _decide(components, req, ctx, credential: Credential, path: str) -> Decision:
    team = requested_team(req.headers)
    model = _request_model(req, ctx, path)
    input_doc = {
        "request": {"method": req.method, "path": path, "model": model, "requested_team": team},
        "credential": credential.as_input(),
    }
    facts = components.facts.for_credential(credential, team, model)
    if req.method == "POST" and path in MODEL_ROUTES:
        # Spending routes: the budgets of every principal the request may spend for, for the policy
        # (it selects the team the request runs as); their rate limits, for the proxy.
        team_ids = (facts or {}).get("teams", {})
        ctx.standing = components.budgets.standing(components.budgets.principals(credential, team_ids))
        budgets = components.budgets.facts(ctx.standing)
        if budgets is not None:
            facts = {**(facts or {}), "budgets": budgets}
    if facts is not None:
        input_doc["facts"] = facts
    decision = components.decisions.decide(input_doc)
    metrics.labelled(metrics.DECISIONS, "allow" if decision.allow else "deny", decision.reason or "").inc()
    return decision


def gate():
    # The request and g behind their proxies, once: every access through a proxy looks them up again.
    req, ctx = request._get_current_object(), g._get_current_object()
    ctx.request_id = uuid.uuid4().hex
    ctx.started = time.perf_counter()
    ctx.reason = None
    metrics.IN_FLIGHT.inc()
    if _exempt(req.path):
        return None
    components = current_app.extensions["regate"]
    try:
        path = canonical_path(request_target(req.environ))
        if req.environ.get("SCRIPT_NAME") or req.path != path:
            # Flask dispatches on PATH_INFO, which a WSGI server may shorten by a SCRIPT_NAME
            # header (gunicorn's default trusts loopback peers with it; `regate serve` trusts
            # none): whatever server runs the app, the decided path must be the dispatched one.
            raise NonCanonicalPath("the request would be routed to another path than its target (SCRIPT_NAME)")
        credential = components.authenticator.authenticate(req.headers)
        decision = _decide(components, req, ctx, credential, path)
    except RegateError as e:
        if e.code.startswith("decision_"):
            metrics.DECISIONS.labels("error", e.code).inc()
        ctx.reason = e.code
        return from_error(e)
    ctx.decision = decision
    if not decision.allow:
        ctx.reason = decision.reason
        if decision.reason == "state_unavailable":
            components.block_sync.request_full_sync()
        return error_response(decision.status, decision.message, decision.reason)
    try:
        _upsert(components, decision)
    except RegateError as e:
        ctx.reason = e.code
        return from_error(e)
    ctx.auth = Auth(credential, decision, path)
    _begin_admission(components, ctx, decision)
    return None


def _begin_admission(components, ctx, decision: Decision) -> None:
    """Ask the rate-limit counters now whether the call may go on (the principals it spends for:
    of a token's teams, the one it runs as); the proxy reads the answer once its upstream request
    is built, so the round trip overlaps the way there. Not for a body the proxy refuses unread."""
    standing = ctx.get("standing")
    if standing and isinstance(json_body(), dict):
        limits = limits_of(components.budgets.of_subject(standing, decision.subject))
        if limits:
            ctx.admitting = components.limiter.begin(ctx.request_id, limits)


def _abandon_admission(_error) -> None:
    """A request refused after the gate asked the counters, before the proxy read the answer."""
    pending = g.pop("admitting", None)
    if pending is not None:
        pending.abandon()


def _upsert(components, decision: Decision) -> None:
    """Create the user and the team the policy asks for (user_id_upsert, team_id_upsert)."""
    subject = decision.subject
    if decision.upsert_user:
        components.store.create_user(subject["user_id"], email=subject["email"], if_missing=True)
        components.facts.created(subject["user_id"])
    if decision.upsert_team:
        components.store.create_team(subject["team_id"], if_missing=True)
        components.facts.team_changed(subject["team_id"])


def _access_fields(req, ctx, response) -> dict:
    decision = ctx.get("decision")
    subject = decision.subject if decision else {}
    return {
        "request_id": ctx.get("request_id"),
        "decision_id": decision.decision_id if decision else None,
        "method": req.method,
        "path": request_target(req.environ).split("?", 1)[0][:256],
        "status": response.status_code,
        "reason": ctx.get("reason"),
        "role": decision.role if decision else None,
        "user_id": subject.get("user_id"),
        "team_id": subject.get("team_id"),
        "model": ctx.get("model"),
    }


def finish(response):
    ctx = g._get_current_object()
    if "started" not in ctx:  # the gate did not run (e.g. a routing error before it)
        return response
    response.headers["X-Request-ID"] = ctx.request_id
    metrics.labelled(metrics.REQUESTS, str(response.status_code)).inc()
    # Read now: the request context is gone when the stream ends.
    fields = _access_fields(request._get_current_object(), ctx, response)
    started = ctx.started

    def closed():
        metrics.IN_FLIGHT.dec()
        fields["ms"] = round((time.perf_counter() - started) * 1000, 2)
        log.info(_log_line(fields))

    response.call_on_close(closed)
    return response


def init_app(app: Flask) -> None:
    app.before_request(gate)
    app.after_request(finish)
    app.teardown_request(_abandon_admission)
