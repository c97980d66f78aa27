"""Model routing and forwarding to the model upstreams.

`Upstreams` maps a request's public `model` to a `model_list` entry (round-robin when
several entries share a name) and calls its upstream over pooled keep-alive connections
(`http_client`, one pool per upstream origin); `UpstreamCall` hands back the answer, a
parsed JSON body or the raw SSE bytes as they arrive, and the token usage.

Upstream protocols:
- `openai` (OpenAI and compatible servers): `POST {api_base}/chat/completions` (or
  `/completions`, `/embeddings`), `Authorization: Bearer {api_key}`, body `model`
  replaced by the entry's upstream model. api_base defaults to OPENAI_BASE_URL /
  OPENAI_API_BASE, then `https://api.openai.com/v1`; api_key to OPENAI_API_KEY (it may be
  absent for a custom api_base, e.g. a local server without auth).
- `azure`: `POST {api_base}/openai/deployments/{deployment}/chat/completions?api-version=V`
  with `api-key: {api_key}`; the body's `model` is removed (the deployment in the path
  chooses the model). Fallbacks as in LiteLLM: AZURE_API_BASE, AZURE_API_KEY,
  AZURE_API_VERSION, then api-version DEFAULT_AZURE_API_VERSION.
Other providers are accepted in the config but answered 501 `provider_not_supported`.

What reaches the upstream: only headers built here (Content-Type, Accept,
Accept-Encoding: identity, User-Agent, the upstream credential, X-Request-ID) plus the
client headers named in FORWARDED_CLIENT_HEADERS. Client credentials, cookies and
hop-by-hop headers never pass. OpenAI-Organization / OpenAI-Project are NOT forwarded:
they would let a client choose which organisation or project regate's key bills.
For `stream: true` chat/completions requests `stream_options.include_usage` is forced to
true (other stream_options kept) so the last chunk carries the usage that spend needs.

Timeouts (never a hang):
- non-streaming: the whole call (connect, headers, body) is bounded by the entry's
  `timeout`, else `default_timeout`; connecting alone by `connect_timeout`.
- streaming: the wait for the headers and every gap between reads is bounded by
  `stream_timeout`, else `timeout`, else `default_timeout`; the whole stream by
  `max_stream_seconds`.
Errors: unreachable upstream → UpstreamError 502; timeout → 504 `upstream_timeout`;
an upstream HTTP error passes through with its status and OpenAI-shaped body, except
401/403/407 (the upstream rejected *regate's* key, not the client) → 502
`upstream_auth_failed`, and redirects (never followed: they could carry the key
elsewhere) → 502. Upstream error messages are scrubbed of API keys before the client
sees them.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Literal
from urllib.parse import quote, urlsplit

from regate.common import env
from regate.common.errors import BadRequestError, RegateError, UnknownModelError, UpstreamError
from regate.common.version import __version__
from regate.compiler.model import Deployment

from .http_client import (
    ConnectError,
    ConnectionPool,
    ConnectTimeout,
    HTTPClientError,
    IncompleteAnswer,
    ProtocolError,
    Response,
    TLSError,
)

log = logging.getLogger("regate.upstreams")

Kind = Literal["chat", "completions", "embeddings"]

DEFAULT_OPENAI_BASE = "https://api.openai.com/v1"
DEFAULT_AZURE_API_VERSION = "2024-10-21"  # GA; supports stream_options.include_usage
SUPPORTED_PROVIDERS = ("openai", "azure")

# Client headers that may reach the upstream (lower-case). Everything else is dropped.
FORWARDED_CLIENT_HEADERS = frozenset({"openai-beta", "traceparent", "tracestate"})
# Upstream answer headers that are safe and useful to hand back to the client.
RETURNED_UPSTREAM_HEADERS = frozenset({"retry-after", "retry-after-ms", "openai-processing-ms", "openai-version"})
RETURNED_UPSTREAM_HEADER_PREFIXES = ("x-ratelimit-",)

MAX_JSON_BODY = 64 * 1024 * 1024  # a non-streamed answer larger than this is refused (502)
MAX_SSE_LINE = 1024 * 1024  # longer SSE lines pass through but are not scanned for usage
READ_SIZE = 64 * 1024

_ROUTE_PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,200}")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_*\-]{4,}")
_TRANSPORT_ERRORS = (HTTPClientError, OSError)


class _Target:
    """A resolved `model_list` entry: where and how to call it. Secrets stay out of repr."""

    __slots__ = ("deployment", "pool", "base_path", "auth", "api_version")

    def __init__(self, deployment: Deployment, pool: ConnectionPool, base_path: str,
                 auth: tuple[str, str] | None, api_version: str | None):
        self.deployment = deployment
        self.pool = pool
        self.base_path = base_path
        self.auth = auth
        self.api_version = api_version

    def path(self, kind: Kind) -> str:
        if self.deployment.provider == "azure":
            deployment = quote(self.deployment.upstream_model, safe="")
            version = quote(self.api_version or DEFAULT_AZURE_API_VERSION, safe="")
            return f"{self.base_path}/openai/deployments/{deployment}{_ROUTE_PATHS[kind]}?api-version={version}"
        return self.base_path + _ROUTE_PATHS[kind]

    def redact(self, text: str) -> str:
        """Remove regate's upstream key (and anything key-shaped) from an upstream message."""
        if self.auth is not None:
            secret = self.auth[1].removeprefix("Bearer ")
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return _KEY_LIKE.sub("sk-***", text)

    def __repr__(self) -> str:
        d = self.deployment
        return f"<_Target {d.model_name!r} -> {d.provider}/{d.upstream_model}>"


@dataclass(frozen=True)
class PreparedCall:
    """A request for an upstream, ready to send (Upstreams.prepare)."""

    target: _Target
    path: str
    payload: bytes = field(repr=False)
    headers: dict[str, str] = field(repr=False)  # the upstream's credential among them
    streaming: bool


class Upstreams:
    """The configured model upstreams, resolved once at start."""

    def __init__(self, deployments: Sequence[Deployment], *, environ: Mapping[str, str] = os.environ,
                 pool_maxsize: int = 1024, connect_timeout: float = 3.0, default_timeout: float = 600.0,
                 max_stream_seconds: float = 3600.0, ssl_context: ssl.SSLContext | None = None):
        self._ssl_context = ssl_context  # None: the system's CAs
        self.connect_timeout = connect_timeout
        self.default_timeout = default_timeout
        self.max_stream_seconds = max_stream_seconds
        self._names = sorted({d.model_name for d in deployments})
        self._targets: dict[str, list[_Target]] = {}
        self._unsupported: dict[str, str] = {}  # model name -> provider, when no entry of it is proxied
        self._pools: dict[tuple[str, str, int | None], ConnectionPool] = {}
        for deployment in deployments:
            targets = self._targets.setdefault(deployment.model_name, [])
            if deployment.provider in SUPPORTED_PROVIDERS:
                targets.append(self._resolve(deployment, environ, pool_maxsize))
            else:
                self._unsupported.setdefault(deployment.model_name, deployment.provider)
        # itertools.count's next() is atomic, so the rotation needs no lock.
        self._turns = {name: itertools.count() for name in self._targets}

    def model_names(self) -> list[str]:
        """The public model names, sorted and unique (for /v1/models)."""
        return list(self._names)

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self._pools.values():
            pool.close()

    def open(self, kind: Kind, body: Mapping[str, Any], *, request_id: str,
             extra_headers: Mapping[str, str] | None = None) -> UpstreamCall:
        """Send the request upstream and return once the answer's status and headers arrived.

        Raises UnknownModelError (400), RegateError `provider_not_supported` (501),
        BadRequestError (400) for a body that cannot be forwarded, UpstreamError (502/504).
        """
        return self.send(self.prepare(kind, body, request_id=request_id, extra_headers=extra_headers))

    def prepare(self, kind: Kind, body: Mapping[str, Any], *, request_id: str,
                extra_headers: Mapping[str, str] | None = None) -> PreparedCall:
        """The request `open` would send, not sent yet; raises what `open` raises before sending."""
        if kind not in _ROUTE_PATHS:
            raise ValueError(f"unknown request kind {kind!r}")
        if not isinstance(body, Mapping):
            raise BadRequestError("the request body must be a JSON object")
        target = self._pick(body.get("model"))
        if body.get("stream") is not None and not isinstance(body["stream"], bool):
            # A server that coerces 1 or "true" would stream without the usage regate asks for.
            raise BadRequestError("`stream` must be true or false")
        streaming = kind != "embeddings" and body.get("stream") is True
        return PreparedCall(target, target.path(kind), _payload(target, body, streaming),
                            _request_headers(target, request_id, extra_headers), streaming)

    def send(self, prepared: PreparedCall) -> UpstreamCall:
        """Send a prepared request (see `open`): UpstreamError (502/504) when it fails."""
        target, streaming = prepared.target, prepared.streaming
        deployment = target.deployment
        started = time.monotonic()
        if streaming:
            wait = deployment.stream_timeout or deployment.timeout or self.default_timeout
            deadline = started + self.max_stream_seconds
        else:
            wait = deployment.timeout or self.default_timeout
            deadline = started + wait
        try:
            # The request and the answer's head, however they trickle in, within one wait.
            response = target.pool.request("POST", prepared.path, prepared.payload, prepared.headers,
                                           connect_timeout=min(self.connect_timeout, wait), timeout=wait,
                                           deadline=started + wait)
        except _TRANSPORT_ERRORS as exc:
            raise _transport_error(exc, target, wait) from None
        return UpstreamCall(response, target, wait=wait, deadline=deadline)

    # internals ------------------------------------------------------------------------
    def _pick(self, model: Any) -> _Target:
        if not isinstance(model, str) or not model:
            raise UnknownModelError("the request body must name a `model`")
        targets = self._targets.get(model)
        if targets is None:
            shown = model if len(model) <= 80 else model[:80] + "..."
            raise UnknownModelError(f"model {shown!r} is not served by this proxy (GET /v1/models lists the models)")
        if not targets:
            raise RegateError(
                f"model {model!r} uses provider {self._unsupported[model]!r}, which regate does not proxy "
                f"(supported: {', '.join(SUPPORTED_PROVIDERS)})",
                code="provider_not_supported", status=501,
            )
        return targets[next(self._turns[model]) % len(targets)]

    def _resolve(self, deployment: Deployment, environ: Mapping[str, str], pool_maxsize: int) -> _Target:
        where = f"model_list entry {deployment.model_name!r}"
        if deployment.origin is not None:
            where += f" ({deployment.origin.file}:{deployment.origin.line})"

        def setting(value: str | None, field: str) -> str | None:
            return env.resolve(value, f"{where}: {field}", environ)

        api_key = setting(deployment.api_key, "api_key")
        api_base = setting(deployment.api_base, "api_base")
        api_version = setting(deployment.api_version, "api_version")
        if deployment.provider == "azure":
            api_key = api_key or environ.get("AZURE_API_KEY") or environ.get("AZURE_OPENAI_API_KEY") or None
            api_base = api_base or environ.get("AZURE_API_BASE") or environ.get("AZURE_OPENAI_ENDPOINT") or None
            api_version = api_version or environ.get("AZURE_API_VERSION") or DEFAULT_AZURE_API_VERSION
            if not api_base:
                raise RegateError(f"{where}: azure needs api_base (or AZURE_API_BASE)", code="missing_api_base")
            if not api_key:
                raise RegateError(f"{where}: azure needs api_key (or AZURE_API_KEY)", code="missing_api_key")
        else:
            api_key = api_key or environ.get("OPENAI_API_KEY") or None
            api_base = (api_base or environ.get("OPENAI_BASE_URL") or environ.get("OPENAI_API_BASE")
                        or DEFAULT_OPENAI_BASE)

        parts = urlsplit(api_base)
        try:
            port = parts.port
        except ValueError:  # a port that is not a number
            port = -1
        if (parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.username
                or parts.password or parts.query or parts.fragment):
            raise RegateError(f"{where}: api_base must be an http(s) URL without credentials, query or fragment",
                              code="invalid_api_base")
        if parts.hostname == "api.openai.com" and not api_key:
            raise RegateError(f"{where}: api_key is not set (nor OPENAI_API_KEY)", code="missing_api_key")
        if api_key is not None and not _HEADER_VALUE.fullmatch(api_key):
            raise RegateError(f"{where}: api_key contains characters not allowed in an HTTP header",
                              code="invalid_api_key")
        if deployment.provider == "azure":
            auth: tuple[str, str] | None = ("api-key", api_key)  # type: ignore[assignment]
        else:
            auth = ("Authorization", f"Bearer {api_key}") if api_key else None

        origin = (parts.scheme, parts.hostname.lower(), port)
        pool = self._pools.get(origin)
        if pool is None:
            pool = ConnectionPool(parts.scheme, parts.hostname, parts.port, maxsize=pool_maxsize,
                                  ssl_context=self._ssl_context)
            self._pools[origin] = pool
        return _Target(deployment, pool, parts.path.rstrip("/"), auth, api_version)


class UpstreamCall:
    """One upstream answer. Read it with `read_json()`, or `read_chunk()` / `iter_chunks()`, then `close()`.

    `status` is what the client should get (upstream auth failures and redirects are
    mapped to 502); `upstream_status` is what the upstream said. `headers` holds only
    headers safe to return. `usage` is `(prompt_tokens, completion_tokens)` once the
    answer carried it, else None; `events` counts the JSON events of a stream so far (a
    completion estimate when the usage never comes). `error_code` is None for a 2xx
    answer, else one of `upstream_status`, `upstream_auth_failed`, `upstream_redirect`,
    `upstream_bad_response`.
    """

    def __init__(self, response: Response, target: _Target, *, wait: float, deadline: float):
        self._response = response
        self._target = target
        self._wait = wait
        self._deadline = deadline
        self._closed = False
        self._json: dict | None = None
        self.deployment = target.deployment
        self.upstream_status = response.status
        self.status, self.error_code = _client_status(response.status)
        content_type = response.headers.get("content-type", "")
        # Whatever the request asked: an event-stream answer is relayed, and read for its usage, as a stream.
        self.is_stream = self.error_code is None and content_type.lower().startswith("text/event-stream")
        self.headers = _response_headers(response.header_items, content_type if self.is_stream else "application/json")
        self.usage: tuple[int, int] | None = None
        self._scanner = _UsageScanner() if self.is_stream else None
        response.set_timeout(wait)
        response.set_deadline(deadline)
        if self.error_code == "upstream_auth_failed":
            log.warning("upstream for model %r rejected regate's credentials (HTTP %d)",
                        self.deployment.model_name, self.upstream_status)

    @property
    def ok(self) -> bool:
        return self.error_code is None

    @property
    def events(self) -> int:
        return self._scanner.events if self._scanner is not None else 0

    def read_json(self) -> dict:
        """The answer body as JSON: the upstream's own for 2xx, an OpenAI-shaped error otherwise."""
        if self._json is not None:
            return self._json
        if self.is_stream:
            raise RuntimeError("read_json() on a streamed answer: use read_chunk()")
        raw = self._read_all()
        if self.error_code is not None:
            self._json = self._error_body(raw)
            return self._json
        data = _json_object(raw)
        if data is None:
            raise UpstreamError(f"the upstream for model {self.deployment.model_name!r} answered with a body "
                                "that is not a JSON object", code="upstream_bad_response")
        self.usage = _usage_pair(data.get("usage"))
        self._json = data
        return data

    def read_chunk(self) -> bytes:
        """The body bytes that have arrived (b"" at the end); for SSE, the usage is captured on the way.

        Raises UpstreamError mid-stream when the upstream stalls (504), drops the connection
        (502 `upstream_connection_lost`) or breaks the framing (502 `upstream_bad_response`);
        the client's response has begun by then, so the caller can only end it.
        """
        if self._closed:
            return b""
        data = self._read_some()
        if self._scanner is not None:
            if data:
                self._scanner.feed(data)
            else:
                self._scanner.finish()
            self.usage = self._scanner.usage
        return data

    def iter_chunks(self) -> Iterator[bytes]:
        """`read_chunk()` until the end. Closing the generator early closes the upstream connection."""
        try:
            while data := self.read_chunk():
                yield data
        finally:
            if not self._response.done:
                self.close()

    def drain(self, max_bytes: int, on_chunk: Callable[[], None] | None = None) -> None:
        """After the client left a stream: read on, discarding, until the usage shows or the answer
        ends, for at most `max_bytes` and one wait (each read too); then close. `on_chunk` runs
        after each chunk read (e.g. to renew a rate-limit lease). Never raises."""
        self._deadline = min(self._deadline, time.monotonic() + self._wait)
        self._response.set_deadline(self._deadline)
        read = 0
        try:
            while self.usage is None and read <= max_bytes and (data := self.read_chunk()):
                read += len(data)
                if on_chunk is not None:
                    on_chunk()
        except UpstreamError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Release the connection: back to the pool when fully read, else closed (never reused half-read)."""
        if not self._closed:
            self._closed = True
            self._response.release()

    def __enter__(self) -> UpstreamCall:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals ------------------------------------------------------------------------
    def _read_some(self) -> bytes:
        """One read of what has arrived, bounded by the per-read wait and the whole-call deadline."""
        remaining = self._deadline - time.monotonic()
        try:
            return self._response.read_some(READ_SIZE)
        except _TRANSPORT_ERRORS as exc:
            self.close()
            model = self.deployment.model_name
            if isinstance(exc, TimeoutError):
                raise self._timeout(whole_call=self._wait >= remaining) from None
            if isinstance(exc, ProtocolError) and not isinstance(exc, IncompleteAnswer):
                log.warning("upstream for model %r sent a malformed answer: %s", model, exc)
                raise UpstreamError(f"the upstream for model {model!r} sent a malformed answer",
                                    code="upstream_bad_response") from None
            log.warning("upstream for model %r broke off its answer: %s", model, exc)
            raise UpstreamError(f"the upstream for model {model!r} closed the connection "
                                "before its answer was complete", code="upstream_connection_lost") from None

    def _read_all(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            data = self._read_some()
            if not data:
                return b"".join(parts)
            size += len(data)
            if size > MAX_JSON_BODY:
                self.close()
                raise UpstreamError(f"the answer of the upstream for model {self.deployment.model_name!r} is larger "
                                    f"than {MAX_JSON_BODY} bytes", code="upstream_bad_response")
            parts.append(data)

    def _timeout(self, *, whole_call: bool) -> UpstreamError:
        model = self.deployment.model_name
        if whole_call:
            message = f"the upstream for model {model!r} did not finish its answer in time"
        else:
            message = f"the upstream for model {model!r} sent nothing for {self._wait:g}s"
        return UpstreamError(message, code="upstream_timeout", status=504)

    def _error_body(self, raw: bytes) -> dict:
        model = self.deployment.model_name
        data = _json_object(raw)
        upstream_error = data.get("error") if data is not None else None
        if isinstance(upstream_error, str):
            upstream_error = {"message": upstream_error}
        shaped = isinstance(upstream_error, dict) and isinstance(upstream_error.get("message"), str)
        upstream_message = self._target.redact(upstream_error["message"]) if shaped else ""

        if self.error_code == "upstream_status" and shaped:
            scrubbed = {k: self._target.redact(v) if isinstance(v, str) else v for k, v in upstream_error.items()}
            return {**data, "error": scrubbed}  # the upstream's own error, status passed through
        if self.error_code == "upstream_auth_failed":
            message = (f"the upstream for model {model!r} rejected regate's credentials "
                       f"(HTTP {self.upstream_status})" + (f": {upstream_message}" if upstream_message else ""))
        elif self.error_code == "upstream_redirect":
            message = f"the upstream for model {model!r} answered with a redirect, which regate does not follow"
        else:
            message = f"the upstream for model {model!r} answered HTTP {self.upstream_status}"
            if upstream_message:
                message += f": {upstream_message}"
        return {"error": {"message": message, "type": self.error_code, "param": None, "code": str(self.status)}}


class _UsageScanner:
    """Finds the `usage` object in an SSE byte stream without holding the stream.

    Only complete lines that contain a `"usage": {` object are parsed; a partial line
    is kept until its end arrives (up to MAX_SSE_LINE bytes). `events` counts the JSON
    events (`data: {`) passed, roughly one per token of a completion.
    """

    __slots__ = ("_tail", "_skipping", "usage", "events")

    def __init__(self) -> None:
        self._tail = b""
        self._skipping = False  # inside an over-long line: ignore bytes up to its end
        self.usage: tuple[int, int] | None = None
        self.events = 0

    def feed(self, data: bytes) -> None:
        self.events += data.count(b"data: {")
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return
            data, self._skipping = data[newline + 1:], False
        if self._tail:
            data = self._tail + data
        end = data.rfind(b"\n")
        self._keep(data[end + 1:])
        if end >= 0 and _USAGE_OBJECT.search(data, 0, end):
            for line in data[:end].split(b"\n"):
                self._line(line)

    def finish(self) -> None:
        if self._tail:
            self._line(self._tail)
            self._tail = b""

    def _keep(self, rest: bytes) -> None:
        if len(rest) > MAX_SSE_LINE:
            self._tail, self._skipping = b"", True
        else:
            self._tail = rest

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:") or not _USAGE_OBJECT.search(line):
            return
        event = _json_object(line[5:])
        if event is not None:
            usage = _usage_pair(event.get("usage"))
            if usage is not None:
                self.usage = usage


# helpers ----------------------------------------------------------------------------
def _payload(target: _Target, body: Mapping[str, Any], streaming: bool) -> bytes:
    out = dict(body)
    if target.deployment.provider == "azure":
        out.pop("model", None)  # the deployment in the URL chooses the model
    else:
        out["model"] = target.deployment.upstream_model
    if streaming:
        options = out.get("stream_options")
        if options is None:
            options = {}
        elif not isinstance(options, Mapping):
            raise BadRequestError("`stream_options` must be an object")
        out["stream_options"] = {**options, "include_usage": True}
    try:
        return json.dumps(out, separators=(",", ":"), allow_nan=False).encode("ascii")
    except (TypeError, ValueError, RecursionError):
        raise BadRequestError("the request body cannot be forwarded as JSON") from None


def _request_headers(target: _Target, request_id: str, extra_headers: Mapping[str, str] | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Accept-Encoding": "identity",  # raw bytes pass through unchanged
        "User-Agent": f"regate/{__version__}",
    }
    for name, value in (extra_headers or {}).items():
        lower = name.lower()
        if lower in FORWARDED_CLIENT_HEADERS and isinstance(value, str) and _HEADER_VALUE.fullmatch(value):
            headers[lower] = value
    if isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id):
        headers["X-Request-ID"] = request_id
    if target.auth is not None:
        headers[target.auth[0]] = target.auth[1]
    return headers


def _response_headers(upstream: Sequence[tuple[str, str]], content_type: str) -> dict[str, str]:
    headers = {"Content-Type": content_type}
    if content_type.lower().startswith("text/event-stream"):
        # Streams must not be cached or buffered by a reverse proxy (X-Accel-Buffering: nginx ingress).
        headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    for name, value in upstream:
        lower = name.lower()
        if lower in RETURNED_UPSTREAM_HEADERS or lower.startswith(RETURNED_UPSTREAM_HEADER_PREFIXES):
            headers[name] = value
    return headers


def _client_status(status: int) -> tuple[int, str | None]:
    """(status for the client, error code) of an upstream status."""
    if 200 <= status < 300:
        return status, None
    if status in (401, 403, 407):
        return 502, "upstream_auth_failed"
    if 300 <= status < 400:
        return 502, "upstream_redirect"
    if 400 <= status < 600:
        return status, "upstream_status"
    return 502, "upstream_bad_response"


def _transport_error(exc: BaseException, target: _Target, wait: float) -> UpstreamError:
    model = target.deployment.model_name
    log.warning("upstream %s:%s for model %r failed: %s", target.pool.host, target.pool.port, model, exc)
    if isinstance(exc, ConnectTimeout):
        return UpstreamError(f"connecting to the upstream for model {model!r} timed out",
                             code="upstream_timeout", status=504)
    if isinstance(exc, TimeoutError):
        return UpstreamError(f"the upstream for model {model!r} did not answer within {wait:g}s",
                             code="upstream_timeout", status=504)
    if isinstance(exc, (TLSError, ssl.SSLError)):
        return UpstreamError(f"TLS with the upstream for model {model!r} failed", code="upstream_tls_error")
    if isinstance(exc, ConnectError):
        return UpstreamError(f"the upstream for model {model!r} is unreachable", code="upstream_unreachable")
    if isinstance(exc, ProtocolError) and not isinstance(exc, IncompleteAnswer):
        return UpstreamError(f"the upstream for model {model!r} sent a malformed answer",
                             code="upstream_bad_response")
    return UpstreamError(f"the connection to the upstream for model {model!r} failed",
                         code="upstream_connection_error")


def _json_object(raw: bytes) -> dict | None:
    """The JSON object in `raw`, else None (not JSON, not an object, or nested too deeply to parse)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _usage_pair(usage: Any) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) of an OpenAI usage object; embeddings have no completion."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if completion is None:
        completion = 0
    if _is_count(prompt) and _is_count(completion):
        return prompt, completion
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
