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
from .ratelimit import PendingAdmission, RateLimited
from .responses import from_error
from .spend_record import SpendRecord
from .usage_estimate import completion_tokens, prompt_tokens

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
    """What a spend record needs, captured while the request context exists; records the spend
    and releases the request's rate-limit counters exactly once."""

    def __init__(self, components, ctx, route: str, model: str):
        self.auth = auth = ctx.auth
        subject = auth.subject
        self.writer = components.spend
        self.drains = components.drains
        self.budgets = components.budgets
        self.limiter = components.limiter
        self.admission = None
        self.relaying = False  # the stream's generator has started: its `finally` records the spend
        self.recorded = False
        self.base = dict(
            request_id=ctx.request_id, route=route, model=model,
            user_id=subject["user_id"], team_id=subject["team_id"], organization_id=subject["org_id"],
            end_user_id=subject["end_user_id"], key_hash=auth.credential.key_hash,
        )
        self.started_at = datetime.now(timezone.utc)
        self.prompt_estimate = 0  # set for streams: the prompt's tokens if the usage never comes
        self.completion_estimate: int | None = None  # set for a whole answer without usage
        self.tokens = 0  # the call's, once recorded

    def admit(self, pending: PendingAdmission | None) -> None:
        """Read the admission the gate asked the rate-limit counters for (gate._begin_admission):
        RateLimited / LimiterUnavailable if the request may not go on."""
        if pending is not None:
            self.admission = pending.result()

    def record(self, call, status: str, *, release: bool = True) -> None:
        """Count the call's spend (at once: this worker's next decision sees it) and, unless the
        caller releases later (release_after), its rate-limit counters."""
        if self.recorded:
            return
        self.recorded = True
        usage = call.usage if call is not None else None
        # A stream without its usage (the client left and the upstream did not finish in time,
        # or it sends none), or an answer without one, was still billed: estimate, never zero,
        # and say so in the log.
        estimated = usage is None and call is not None and (call.is_stream or self.completion_estimate is not None)
        if estimated:
            usage = (self.prompt_estimate, call.events if call.is_stream else self.completion_estimate)
            metrics.SPEND_EVENTS.labels("estimated").inc()
        prompt, completion = usage or (0, 0)
        nanos = 0
        if usage is not None:
            priced = quote(call.deployment, prompt, completion)
            nanos = priced.nanos
            if not priced.priced:
                metrics.SPEND_EVENTS.labels("unpriced").inc()
        record = SpendRecord(
            started_at=self.started_at, ended_at=datetime.now(timezone.utc),
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
            spend_nanos=nanos, status=status, usage_estimated=estimated, **self.base,
        )
        self.budgets.spent(record)
        self.writer.submit(record)
        self.tokens = prompt + completion
        if release:
            self._release(self.tokens)

    def release_after(self, response: Response) -> None:
        """Release the counters once the response is sent, so the client does not wait for that
        round trip to the counters: the release leaves right after the last byte, before this
        worker serves anything else (a response's tokens count against tpm from then on)."""
        if self.admission is not None:
            response.call_on_close(lambda: self._release(self.tokens))

    def refused(self) -> None:
        """The upstream was never called (a bad request): nothing to record, the counters released."""
        self.recorded = True
        self._release(0)

    def _release(self, tokens: int) -> None:
        if self.admission is not None:
            try:
                self.limiter.release(self.admission, tokens)
            except RegateError as e:  # the leases expire by themselves; the tokens are lost
                log.warning("rate-limit counters not released for %s: %s", self.base["request_id"], e.message)

    def renew(self) -> None:
        """Keep the request's parallel slots while its stream goes on (the limiter renews at most
        once a minute)."""
        if self.admission is not None:
            self.limiter.renew(self.admission)

    def finish_in_background(self, call) -> None:
        """The client left before the stream ended: the rest is read for its usage (the upstream is
        still busy with it: its slots are kept), then the spend is recorded and the rate-limit
        counters released (stream_drains.py)."""
        self.drains.start(call, lambda: self.record(call, "incomplete"), self.renew)


def _forward(kind: str):
    components = current_app.extensions["regate"]
    req, ctx = request._get_current_object(), g._get_current_object()  # once: see gate.gate
    body = json_body()
    if not isinstance(body, dict):
        return from_error(BadRequestError("the request body must be a JSON object"))
    model = ctx.model or ""
    spend = _SpendContext(components, ctx, req.path, model)
    # Built while the counters answer the gate's question: the two overlap.
    unsendable = prepared = None
    try:
        prepared = components.upstreams.prepare(kind, body, request_id=ctx.request_id, extra_headers=req.headers)
    except RegateError as e:
        unsendable = e
    try:
        spend.admit(ctx.get("admitting"))
    except RateLimited as e:
        ctx.reason = e.code
        response = from_error(e)
        response.headers.update(e.headers)
        return response
    except RegateError as e:
        ctx.reason = e.code
        return from_error(e)
    if unsendable is not None:
        spend.refused()
        return from_error(unsendable)
    started = time.perf_counter()
    try:
        call = components.upstreams.send(prepared)
    except UpstreamError as e:
        spend.record(None, "failure")
        return from_error(e)
    metrics.labelled(metrics.UPSTREAM_SECONDS, model).observe(time.perf_counter() - started)
    if not call.is_stream:
        try:
            data = call.read_json()
        except UpstreamError as e:
            spend.record(call, "failure")
            return from_error(e)
        finally:
            call.close()
        if call.ok and call.usage is None:
            spend.prompt_estimate, spend.completion_estimate = prompt_tokens(kind, body), completion_tokens(kind, data)
        spend.record(call, "success" if call.ok else "failure", release=False)
        response = _with_limits(Response(json.dumps(data), status=call.status, headers=call.headers), spend)
        spend.release_after(response)
        return response
    spend.prompt_estimate = prompt_tokens(kind, body)  # now: the body is not kept for a drain
    # Not direct_passthrough: Werkzeug would hand the bare generator to the server, and the
    # response's close callbacks (access log line, in-flight gauge) would never run.
    response = Response(_relay(call, spend), status=call.status, headers=call.headers)
    # A client gone before the first chunk: the generator never runs, its `finally` neither.
    response.call_on_close(lambda: None if spend.relaying else spend.finish_in_background(call))
    return _with_limits(response, spend)


def _with_limits(response: Response, spend: _SpendContext) -> Response:
    if spend.admission is not None:
        response.headers.update(spend.admission.headers)
    return response


def _relay(call, spend: _SpendContext):
    """Pass the stream through chunk by chunk; if the client leaves, the rest is read in the
    background for the usage (stream_drains.py), off this request."""
    spend.relaying = True
    status = "incomplete"
    client_left = False
    try:
        while chunk := call.read_chunk():
            yield chunk
            spend.renew()
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
            spend.finish_in_background(call)
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
