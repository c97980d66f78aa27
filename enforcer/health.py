"""Probes and metrics, answered without a decision: they must work while OPA is down."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from regate.common.errors import RegateError

from . import metrics

bp = Blueprint("health", __name__)


@bp.get("/health/liveliness")  # LiteLLM's spelling
@bp.get("/health/liveness")
def liveness():
    return jsonify({"status": "ok"})


@bp.get("/health/readiness")
def readiness():
    """Ready when OPA has its bundle, the store answers, and the blocked-team state is loaded."""
    components = current_app.extensions["regate"]
    checks = {"opa": "ok" if components.opa.healthy() else "unavailable"}
    try:
        components.store.ping()
        checks["store"] = "ok"
    except RegateError:
        checks["store"] = "unavailable"
    checks["state"] = "ok" if components.block_sync.loaded else "loading"
    ready = all(v == "ok" for v in checks.values())
    response = jsonify({"status": "ok" if ready else "unavailable", "checks": checks})
    response.status_code = 200 if ready else 503
    return response


@bp.get("/metrics")
def prometheus():
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
