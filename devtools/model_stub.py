"""A local OpenAI-compatible model stub that speaks the real HTTP API (for `regate demo`, tests, benchmarks).

Routes (each also under `/v1`): `POST /chat/completions`, `/completions`, `/embeddings`,
`GET /models`; the Azure form `POST /openai/deployments/{deployment}/{route}?api-version=...`
authenticated by the `api-key` header; `GET /health` for readiness polling.

Answers are shaped like OpenAI's: JSON with `usage`, or (`"stream": true`) a
`text/event-stream` of `data: {...}\\n\\n` chunks ending in `data: [DONE]\\n\\n`, whose
last JSON chunk carries `usage` when `stream_options.include_usage` is true.

Token counts are deterministic so callers know the exact usage in advance:
- prompt_tokens: whitespace-separated words of the prompt (message contents, text
  parts, `prompt`, embedding `input`; a list of token ids counts its length);
- completion_tokens: the request's `max_completion_tokens` / `max_tokens`, else the
  server's `completion_tokens` (default 8). A stream sends one content chunk per token.
A `Behavior` overrides both.

Test controls (`Behavior`): error injection, a delay before the status line, per-chunk
delays, a `hold` event after the first chunk (to prove a proxy streams before the end) and
`holds` before any other chunks,
dropping the connection, close-delimited framing, extra response headers. Behaviours are
taken from the one-shot queue (`push`), else by upstream model (`by_model`), else the
`default`. Every request is recorded (method, path, query, headers, JSON body, peer, and
the body bytes sent back); a client that disconnects mid-stream is noticed when a write
fails (`disconnected`, `disconnects`).

Run standalone (`regate demo`, end-to-end runs, benchmarks): `python -m regate.devtools.model_stub --port P`.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from regate.devtools.stub_server import QuietHandler, ServerThread

MAX_REQUEST_BODY = 64 * 1024 * 1024
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_ROUTES = {"chat/completions": "chat", "completions": "completions", "embeddings": "embeddings"}
_WRITE_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


@dataclass
class Behavior:
    """How the stand-in answers one request. Defaults: a prompt, well-formed answer."""

    status: int = 200
    error: dict | None = None  # the JSON body of a non-2xx answer (OpenAI error shape)
    headers_delay: float = 0.0  # seconds before the status line: a slow upstream
    chunk_delay: float = 0.0  # seconds between stream chunks (and between `body_parts`)
    body_parts: int = 1  # non-streaming: send the body in this many writes
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    hold: threading.Event | None = None  # after the first chunk, wait for it before the rest
    holds: dict[int, threading.Event] = field(default_factory=dict)  # before stream event i, wait for holds[i]
    drop_after_chunks: int | None = None  # close abruptly after this many SSE events
    drop_before_response: bool = False  # read the request, then close without answering
    framing: Literal["chunked", "close"] = "chunked"  # how a stream is delimited
    extra_headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None  # send these bytes instead of a generated body
    content_type: str = "application/json"  # of `raw_body`

    @classmethod
    def fail(cls, status: int, message: str, *, type: str = "invalid_request_error",  # noqa: A002
             code: str | None = None, param: str | None = None, **kw: Any) -> "Behavior":
        """An OpenAI-shaped error answer."""
        error = {"error": {"message": message, "type": type, "param": param, "code": code}}
        return cls(status=status, error=error, **kw)


@dataclass
class RecordedRequest:
    """One request as the stand-in received it."""

    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; repeated headers joined by ", "
    body: Any  # parsed JSON, or None
    raw_body: bytes
    peer: tuple[str, int]  # client address: equal for requests on one kept-alive connection
    response_status: int | None = None
    sent: list[bytes] = field(default_factory=list)  # payload pieces sent back (without HTTP framing)
    completed: bool = False  # the whole answer was handed to the socket

    @property
    def response_body(self) -> bytes:
        return b"".join(self.sent)

    @property
    def header_names(self) -> set[str]:
        return set(self.headers)


class MockOpenAI:
    """The stand-in server. Use as a context manager, or `start()` / `close()`."""

    def __init__(self, *, api_key: str | None = None, completion_tokens: int = 8, embedding_dim: int = 8,
                 models: tuple[str, ...] = ("gpt-4o-mini",), record: bool = True, max_recorded: int = 10000,
                 hold_timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None):
        self.ssl_context = ssl_context  # a server-side context: answer over TLS (https)
        self.api_key = api_key  # when set, requests must carry it (Bearer, or api-key on Azure routes)
        self.completion_tokens = completion_tokens
        self.embedding_dim = embedding_dim
        self.models = models
        self.record = record
        self.hold_timeout = hold_timeout
        self.default = Behavior()
        self.by_model: dict[str, Behavior] = {}
        self.disconnected = threading.Event()
        self.disconnects = 0
        self.streams_completed = 0
        self._queue: deque[Behavior] = deque()
        self._recorded: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._lock = threading.Lock()
        self._recorded_cond = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: ServerThread | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------
    def start(self) -> "MockOpenAI":
        self._server = ServerThread(MockOpenAIHandler, mock=self)  # binds a free loopback port
        if self.ssl_context is not None:
            self._server.httpd.socket = self.ssl_context.wrap_socket(self._server.httpd.socket, server_side=True)
        # Our own loop thread with a short poll interval: shutdown() waits for one poll,
        # and the default 0.5 s would add half a second to every test's teardown.
        self._thread = threading.Thread(target=self._server.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()  # releases held and delayed answers
        if self._server is not None:
            self._server.httpd.shutdown()
            self._server.httpd.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "MockOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL without a path (Azure's api_base)."""
        assert self._server is not None, "not started"
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    @property
    def openai_base(self) -> str:
        """Base URL as OpenAI clients configure it (`.../v1`)."""
        return self.url + "/v1"

    # controls --------------------------------------------------------------------
    def push(self, *behaviors: Behavior) -> None:
        """Queue one-shot behaviours, used by the next requests in order."""
        with self._lock:
            self._queue.extend(behaviors)

    def behavior_for(self, model: str | None) -> Behavior:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.by_model.get(model or "", self.default)

    # observations ----------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._recorded)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            assert self._recorded, "the stand-in received no request"
            return self._recorded[-1]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        with self._recorded_cond:
            if not self._recorded_cond.wait_for(lambda: len(self._recorded) >= count, timeout):
                raise AssertionError(f"expected {count} requests, got {len(self._recorded)}")
            return list(self._recorded)

    def clear(self) -> None:
        with self._lock:
            self._recorded.clear()
            self._queue.clear()
            self.disconnects = 0
            self.streams_completed = 0
            self.disconnected.clear()

    # used by the handler -----------------------------------------------------------
    def _remember(self, rec: RecordedRequest) -> None:
        if self.record:
            with self._recorded_cond:
                self._recorded.append(rec)
                self._recorded_cond.notify_all()

    def _note_disconnect(self) -> None:
        with self._lock:
            self.disconnects += 1
        self.disconnected.set()

    def _count_stream(self, delta: int) -> None:
        with self._lock:
            self.streams_completed += delta

    def _next_id(self) -> int:
        return next(self._ids)

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _wait_hold(self, hold: threading.Event) -> None:
        deadline = time.monotonic() + self.hold_timeout
        while not hold.is_set() and not self._stopping.is_set() and time.monotonic() < deadline:
            hold.wait(0.05)


class _Dropped(Exception):
    """The handler closed the connection on purpose (a `drop_*` behaviour)."""


class MockOpenAIHandler(QuietHandler):
    server_version = "mock-openai/1.0"
    sys_version = ""

    @property
    def mock(self) -> MockOpenAI:
        return self.server.mock  # type: ignore[attr-defined]

    # HTTP entry points -------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - name from the base class
        path = urlsplit(self.path).path
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path in ("/models", "/v1/models"):
            data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"} for m in self.mock.models]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, _error(f"Invalid URL (GET {path})"))

    def do_POST(self) -> None:  # noqa: N802 - name from the base class
        try:
            self._handle_post()
        except _Dropped:
            self.close_connection = True
        except _WRITE_ERRORS:  # the client went away while we were answering
            self.close_connection = True
            self.mock._note_disconnect()

    # request handling -----------------------------------------------------------------
    def _handle_post(self) -> None:
        split = urlsplit(self.path)
        raw = self._read_body()
        if raw is None:
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        rec = RecordedRequest(self.command, split.path, parse_qs(split.query, keep_blank_values=True), headers,
                              body, raw, self.client_address[:2])
        self.mock._remember(rec)

        kind, deployment, azure = _route(split.path)
        if kind is None:
            return self._answer(rec, 404, _error(f"Invalid URL (POST {split.path})"))
        if azure and not rec.query.get("api-version"):
            return self._answer(rec, 404, {"error": {"code": "404", "message": "Resource not found"}})
        if not self._authorized(headers, azure):
            return self._answer(rec, 401, self._unauthorized(headers, azure))
        if not isinstance(body, dict):
            return self._answer(rec, 400, _error("We could not parse the JSON body of your request."))
        model = deployment if azure else body.get("model")
        if not isinstance(model, str) or not model:
            return self._answer(rec, 400, _error("you must provide a model parameter", param="model"))
        required = {"chat": "messages", "completions": "prompt", "embeddings": "input"}[kind]
        if required not in body:
            return self._answer(rec, 400, _error(f"Missing required parameter: '{required}'.", param=required))

        behavior = self.mock.behavior_for(model)
        self.mock._pause(behavior.headers_delay)
        if behavior.drop_before_response:
            self._drop()
        if behavior.raw_body is not None:
            return self._answer_bytes(rec, behavior.status, behavior.raw_body, behavior.content_type, behavior)
        if behavior.status >= 300:
            return self._answer(rec, behavior.status, behavior.error or _error("injected error"), behavior)

        prompt_tokens = behavior.prompt_tokens if behavior.prompt_tokens is not None else _count_prompt(kind, body)
        if kind == "embeddings":
            return self._answer(rec, 200, self._embeddings(body, model, prompt_tokens), behavior)
        completion_tokens = _completion_tokens(body, behavior, self.mock.completion_tokens)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return self._stream(rec, kind, model, completion_tokens, usage if include_usage else None, behavior)
        answer = _completion(kind, model, self.mock._next_id(), completion_tokens, usage)
        return self._answer(rec, 200, answer, behavior)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                self._send_json(411, _error("Content-Length required"))
                self.close_connection = True
                return None
            return b""
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_REQUEST_BODY:
            self._send_json(413 if n > 0 else 400, _error("bad Content-Length"))
            self.close_connection = True
            return None
        return self.rfile.read(n)

    def _authorized(self, headers: dict[str, str], azure: bool) -> bool:
        key = self.mock.api_key
        if key is None:
            return True
        if azure:
            return headers.get("api-key") == key
        return headers.get("authorization") == f"Bearer {key}"

    @staticmethod
    def _unauthorized(headers: dict[str, str], azure: bool) -> dict:
        if azure:
            return {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong "
                                                        "API endpoint. Make sure to provide a valid key for an "
                                                        "active subscription and use a correct regional API "
                                                        "endpoint for your resource."}}
        sent = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not sent:
            return _error("You didn't provide an API key. You need to provide your API key in an Authorization "
                          "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        masked = sent[:3] + "*" * max(len(sent) - 7, 1) + sent[-4:]  # as OpenAI masks it
        return _error(f"Incorrect API key provided: {masked}. You can find your API key at "
                      "https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def _embeddings(self, body: dict, model: str, prompt_tokens: int) -> dict:
        inputs = body["input"]
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dim = body.get("dimensions") if isinstance(body.get("dimensions"), int) else self.mock.embedding_dim
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i in range(len(inputs) if isinstance(inputs, list) else 1):
            vector = [round(((i + 1) * (j + 3) % 17) / 17 - 0.5, 6) for j in range(dim)]
            embedding: Any = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}

    # answers ---------------------------------------------------------------------------
    def _head(self, status: int, content_type: str, behavior: Behavior | None, *, length: int | None,
              chunked: bool = False) -> bytes:
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
        lines = [f"HTTP/1.1 {status} {phrase}", f"Server: {self.server_version}", f"Date: {self.date_time_string()}",
                 f"Content-Type: {content_type}", f"x-request-id: req_mock{self.mock._next_id()}",
                 "openai-organization: mock-org", "openai-processing-ms: 1", "openai-version: 2020-10-01",
                 "x-ratelimit-limit-requests: 10000", "x-ratelimit-remaining-requests: 9999",
                 "set-cookie: __cf_bm=mock; path=/; HttpOnly"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        elif chunked:
            lines.append("Transfer-Encoding: chunked")
        if behavior is not None:
            lines.extend(f"{name}: {value}" for name, value in behavior.extra_headers.items())
        if self.close_connection or (length is None and not chunked):
            self.close_connection = True
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_json(self, status: int, payload: dict) -> None:
        body = _DUMPS(payload).encode()
        self.wfile.write(self._head(status, "application/json", None, length=len(body)) + body)

    def _answer(self, rec: RecordedRequest, status: int, payload: dict, behavior: Behavior | None = None) -> None:
        self._answer_bytes(rec, status, _DUMPS(payload).encode(), "application/json", behavior)

    def _answer_bytes(self, rec: RecordedRequest, status: int, body: bytes, content_type: str,
                      behavior: Behavior | None) -> None:
        # The record is updated before the last write: a client may act on the answer
        # (and a test inspect the record) before this thread runs again.
        rec.response_status = status
        rec.sent.append(body)
        head = self._head(status, content_type, behavior, length=len(body))
        parts = max(behavior.body_parts, 1) if behavior else 1
        if parts == 1:
            rec.completed = True
            self.wfile.write(head + body)  # one send: status line, headers and body
            return
        step = -(-len(body) // parts)
        self.wfile.write(head + body[:step])
        for start in range(step, len(body), step):
            self.mock._pause(behavior.chunk_delay)
            rec.completed = start + step >= len(body)
            self.wfile.write(body[start:start + step])

    def _stream(self, rec: RecordedRequest, kind: str, model: str, completion_tokens: int,
                usage: dict | None, behavior: Behavior) -> None:
        rec.response_status = 200
        chunked = behavior.framing == "chunked"
        head = self._head(200, "text/event-stream; charset=utf-8", behavior, length=None, chunked=chunked)
        events = list(_sse_events(kind, model, self.mock._next_id(), completion_tokens, usage))
        last = len(events) - 1
        for index, event in enumerate(events):
            if behavior.drop_after_chunks is not None and index >= behavior.drop_after_chunks:
                self._drop()
            framed = b"%x\r\n%s\r\n" % (len(event), event) if chunked else event
            if index == 0:
                framed = head + framed  # headers and the first chunk in one send
            else:
                hold = behavior.holds.get(index) or (behavior.hold if index == 1 else None)
                if hold is not None:
                    self.mock._wait_hold(hold)
                self.mock._pause(behavior.chunk_delay)
            rec.sent.append(event)  # recorded before the write, as in _answer_bytes
            if index < last:
                self.wfile.write(framed)  # a failed write (client gone) propagates to do_POST
                continue
            rec.completed = True
            self.mock._count_stream(+1)
            try:
                self.wfile.write(framed + b"0\r\n\r\n" if chunked else framed)
            except _WRITE_ERRORS:
                rec.completed = False
                self.mock._count_stream(-1)
                raise

    def _drop(self) -> None:
        """Close the connection abruptly (no terminating chunk, no answer)."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Dropped()


# payloads ---------------------------------------------------------------------------
def _route(path: str) -> tuple[str | None, str | None, bool]:
    """(kind, azure deployment, is_azure) of a request path."""
    if path.startswith("/openai/deployments/"):
        deployment, _, rest = path[len("/openai/deployments/"):].partition("/")
        kind = _ROUTES.get(rest)
        return (kind, deployment, True) if kind and deployment else (None, None, True)
    return _ROUTES.get(path.removeprefix("/v1").lstrip("/")), None, False


def _error(message: str, *, type: str = "invalid_request_error", param: str | None = None,  # noqa: A002
           code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return len(value)  # a list of token ids
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("text", ""))  # a content part
    return 0


def _count_prompt(kind: str, body: dict) -> int:
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return 0
        return sum(_words(m.get("content")) for m in messages if isinstance(m, dict))
    return _words(body.get("prompt" if kind == "completions" else "input"))


def _completion_tokens(body: dict, behavior: Behavior, default: int) -> int:
    if behavior.completion_tokens is not None:
        return behavior.completion_tokens
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return default


def _pieces(completion_tokens: int) -> list[str]:
    return [f"tok{i} " for i in range(completion_tokens)]


def _completion(kind: str, model: str, n: int, completion_tokens: int, usage: dict) -> dict:
    text = "".join(_pieces(completion_tokens))
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                  "logprobs": None, "finish_reason": "stop"}
        return {"id": f"chatcmpl-mock{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [choice], "usage": usage, "system_fingerprint": "fp_mock"}
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}
    return {"id": f"cmpl-mock{n}", "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage}


def _sse_events(kind: str, model: str, n: int, completion_tokens: int, usage: dict | None):
    """The SSE events of one streamed answer, each `data: ...\\n\\n` as bytes."""
    created = int(time.time())
    if kind == "chat":
        base = {"id": f"chatcmpl-mock{n}", "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_mock"}

        def chunk(delta: dict, finish: str | None) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        chunks = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
        chunks += [chunk({"content": piece}, None) for piece in _pieces(completion_tokens)]
        chunks.append(chunk({}, "stop"))
    else:
        base = {"id": f"cmpl-mock{n}", "object": "text_completion", "created": created, "model": model}

        def chunk(text: str, finish: str | None) -> dict:  # type: ignore[misc]
            return {**base, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

        chunks = [chunk(piece, None) for piece in _pieces(completion_tokens)] + [chunk("", "stop")]
    if usage is not None:
        for c in chunks:
            c["usage"] = None  # as OpenAI does: null on every chunk but the last
        chunks.append({**base, "choices": [], "usage": usage})
    for c in chunks:
        yield b"data: " + _DUMPS(c).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


# standalone entry point -------------------------------------------------------------------
class _StandaloneServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # benchmarks open many connections at once


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible stand-in model provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", help="require this key (Bearer, or api-key on Azure routes)")
    parser.add_argument("--completion-tokens", type=int, default=8, help="when the request sets no max_tokens")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    parser.add_argument("--headers-delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--record", action="store_true", help="keep received requests in memory")
    args = parser.parse_args(argv)

    mock = MockOpenAI(api_key=args.api_key, completion_tokens=args.completion_tokens, record=args.record)
    mock.default = Behavior(chunk_delay=args.chunk_delay, headers_delay=args.headers_delay)
    httpd = _StandaloneServer((args.host, args.port), MockOpenAIHandler)
    httpd.mock = mock  # type: ignore[attr-defined]
    print(f"mock-openai listening on http://{args.host}:{httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        mock._stopping.set()
        httpd.server_close()


if __name__ == "__main__":
    main()
