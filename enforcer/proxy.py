"""The LLM routes: forward allowed calls to the model upstream (JSON or SSE) and record spend."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

from flask import Blueprint, Response, current_app, g, jsonify, request

from regate.common.errors import BadRequestError, RegateError, UpstreamError

from . import metrics
from .bodies import json_body
from .pricing import quote
from .responses import from_error
from .spend_record import SpendRecord
from .usage_estimate import prompt_tokens

log = logging.getLogger("regate.proxy")
bp = Blueprint("proxy", __name__)

ROUTES = {
    "chat": ("/chat/completions", "/v1/chat/completions"),
    "completions": ("/completions", "/v1/completions"),
    "embeddings": ("/embeddings", "/v1/embeddings"),
}


@bp.get("/models")
@bp.get("/v1/models")
def list_models():
    names = current_app.extensions["regate"].upstreams.model_names()
    return jsonify({"object": "list",
                    "data": [{"id": n, "object": "model", "created": 0, "owned_by": "regate"} for n in names]})


class _SpendContext:
    """What a spend record needs, captured while the request context exists."""

    def __init__(self, components, route: str, model: str):
        auth = g.auth
        subject = auth.subject
        self.writer = components.spend
        self.drains = components.drains
        self.base = dict(
            request_id=g.request_id, route=route, model=model,
            user_id=subject["user_id"], team_id=subject["team_id"], organization_id=subject["org_id"],
            end_user_id=subject["end_user_id"], key_hash=auth.credential.key_hash,
        )
        self.started_at = datetime.now(timezone.utc)
        self.prompt_estimate = 0  # set for streams: the prompt's tokens if the usage never comes

    def record(self, call, status: str) -> None:
        usage = call.usage if call is not None else None
        # A stream without its usage (the client left and the upstream did not finish in time,
        # or it sends none) was still billed: estimate, never zero, and say so in the log.
        estimated = usage is None and call is not None and call.is_stream
        if estimated:
            usage = (self.prompt_estimate, call.events)
            metrics.SPEND_EVENTS.labels("estimated").inc()
        prompt, completion = usage or (0, 0)
        nanos = 0
        if usage is not None:
            priced = quote(call.deployment, prompt, completion)
            nanos = priced.nanos
            if not priced.priced:
                metrics.SPEND_EVENTS.labels("unpriced").inc()
        self.writer.submit(SpendRecord(
            started_at=self.started_at, ended_at=datetime.now(timezone.utc),
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
            spend_nanos=nanos, status=status, usage_estimated=estimated, **self.base,
        ))


def _forward(kind: str):
    components = current_app.extensions["regate"]
    body = json_body()
    if not isinstance(body, dict):
        return from_error(BadRequestError("the request body must be a JSON object"))
    spend = _SpendContext(components, request.path, g.model or "")
    started = time.perf_counter()
    try:
        call = components.upstreams.open(kind, body, request_id=g.request_id, extra_headers=request.headers)
    except RegateError as e:
        if isinstance(e, UpstreamError):
            spend.record(None, "failure")
        return from_error(e)
    metrics.UPSTREAM_SECONDS.labels(g.model or "").observe(time.perf_counter() - started)
    if not call.is_stream:
        try:
            data = call.read_json()
        except UpstreamError as e:
            spend.record(call, "failure")
            return from_error(e)
        finally:
            call.close()
        spend.record(call, "success" if call.ok else "failure")
        return Response(json.dumps(data), status=call.status, headers=call.headers)
    spend.prompt_estimate = prompt_tokens(kind, body)  # now: the body is not kept for a drain
    # Not direct_passthrough: Werkzeug would hand the bare generator to the server, and the
    # response's close callbacks (access log line, in-flight gauge) would never run.
    return Response(_relay(call, spend), status=call.status, headers=call.headers)


def _relay(call, spend: _SpendContext):
    """Pass the stream through chunk by chunk; if the client leaves, the rest is read in the
    background for the usage (stream_drains.py), off this request."""
    status = "incomplete"
    client_left = False
    try:
        while chunk := call.read_chunk():
            yield chunk
        status = "success"
    except UpstreamError as e:
        status = "failure"
        # Headers are gone already: end the stream with an SSE error event the client can read.
        error = {"error": {"message": e.message, "type": "upstream_error", "param": None, "code": str(e.status)}}
        yield f"data: {json.dumps(error)}\n\n".encode()
    except GeneratorExit:  # the server closes the response: the client went away
        client_left = True
        raise
    finally:
        if client_left:
            spend.drains.start(call, lambda: spend.record(call, "incomplete"))
        else:
            call.close()
            spend.record(call, status)


def _register(kind: str, paths: tuple[str, ...]) -> None:
    def handler():
        return _forward(kind)

    handler.__name__ = f"forward_{kind}"
    for path in paths:
        bp.add_url_rule(path, view_func=handler, methods=["POST"])


for _kind, _paths in ROUTES.items():
    _register(_kind, _paths)
