"""The enforcer's HTTP/1.1 server: gunicorn's gevent worker, with requests parsed by llhttp.

Why not gunicorn's own request loop: its parser and request objects are pure Python, about
480 µs of worker CPU per request on the bench host (bench/results.md), a fifth of a proxied
completion. gunicorn still runs the master (worker processes, signals, graceful stops, hooks);
`Worker` replaces only what happens on a connection:

- requests are parsed by llhttp (Node's parser, through `httptools`) in its strict mode: one
  unambiguous framing (Content-Length and Transfer-Encoding together, two Content-Lengths, a
  transfer coding other than a final `chunked`, folded or malformed header lines, bare LF: all
  refused), token header names, no control bytes; an HTTP/1.1 request needs exactly one Host.
  (Repeated spaces between the request line's parts read as one: RFC 9112 §3 allows that, and it
  changes neither the target nor the framing.)
  Anything refused is answered 400 and the connection is closed; the app never sees the request;
- limits before the app runs: the request target (`limit_request_line`, 414), the number of
  header fields (`limit_request_fields`) and one field's size (`limit_request_field_size`, 431),
  and the whole head (MAX_HEAD_BYTES, 431);
- header names with `_` are dropped, as gunicorn drops them: in the WSGI environ `X_Team` and
  `X-Team` would be the same key, so a proxy in front that filters one could be bypassed;
- the body is read as the app reads it (Content-Length or chunked, `wsgi.input_terminated`);
  `Expect: 100-continue` is answered when the app first reads; a body the app left unread makes
  the connection close after the answer instead of being skipped;
- the answer's head goes out with its first body bytes in one send (TCP_NODELAY: no Nagle or
  delayed-ACK stall); without a Content-Length it is chunked (HTTP/1.1) or ends with the
  connection (HTTP/1.0), so SSE streams reach the client event by event;
- keep-alive: the next request's head must arrive within `keepalive` seconds; after each answer
  the connection ends if either side asked for it, the worker is stopping, or the request was an
  upgrade (not supported; answered as a plain request).
"""

from __future__ import annotations

import gc
import json
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

import gevent
import httptools
from gunicorn.workers.ggevent import GeventWorker
from werkzeug.exceptions import ClientDisconnected

from .paths import origin_form

MAX_HEAD_BYTES = 64 * 1024  # a request line with its header section
READ_SIZE = 64 * 1024
LINGER_SECONDS = 1.0  # after a refusal: how long, and how much, the client's remaining bytes are read
LINGER_BYTES = 4 * 1024 * 1024
_NO_BODY_STATUSES = (b"1", b"204", b"304")
_SERVER_OWNED = frozenset({"connection", "transfer-encoding", "keep-alive"})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestError(Exception):
    """Raised when a request cannot be served: malformed, over a limit, or cut off."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What a request head may hold (gunicorn's settings of the same names)."""

    request_line: int = 4094
    fields: int = 100
    field_size: int = 8190
    head_bytes: int = MAX_HEAD_BYTES


class _Message:
    __slots__ = ("method", "url", "version", "keep_alive", "headers", "head_size", "head_done", "body",
                 "complete", "expects_continue")

    def __init__(self):
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.head_done = False
        self.body = deque()
        self.complete = False
        self.expects_continue = False


class _Parser:
    """httptools' callbacks: the messages parsed so far (more than one when a client pipelines)."""

    def __init__(self, limits: Limits):
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self.messages: deque[_Message] = deque()
        self._current: _Message | None = None
        # Bytes fed since the last head was done. httptools holds a header line until it ends, so a
        # head too large must be caught here too, not only in the callbacks (which count exactly).
        self._fed_since_head = 0
        self.upgraded = False

    def feed(self, data: bytes) -> None:
        if self.upgraded:
            return  # what follows an upgrade request is not HTTP/1.1; it is never read
        current = self._current
        if current is None or current.complete or not current.head_done:
            self._fed_since_head += len(data)
            if self._fed_since_head > 2 * self._limits.head_bytes:
                raise RequestError(431, "the request head is too large")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgraded = True
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, RequestError):
                raise e.__context__ from None
            raise
        except httptools.HttpParserError as e:
            raise RequestError(400, f"malformed request: {e}") from None

    def on_message_begin(self):
        self._current = _Message()
        self.messages.append(self._current)

    def on_url(self, url: bytes):
        message = self._current
        message.url += url
        message.head_size += len(url)
        if len(message.url) > self._limits.request_line:
            raise RequestError(414, "the request target is too long")

    def on_header(self, name: bytes, value: bytes):
        message = self._current
        if message.head_done:
            return  # a trailer of a chunked body: nothing reads them
        limits = self._limits
        message.headers.append((name, value))
        message.head_size += len(name) + len(value) + 4
        if len(message.headers) > limits.fields:
            raise RequestError(431, "the request has too many header fields")
        if len(name) + len(value) > limits.field_size:
            raise RequestError(431, "a request header field is too large")
        if message.head_size > limits.head_bytes:
            raise RequestError(431, "the request head is too large")

    def on_headers_complete(self):
        message = self._current
        parser = self._parser
        message.head_done = True
        self._fed_since_head = 0
        message.version = parser.get_http_version()
        if message.version not in ("1.1", "1.0"):
            raise RequestError(505, f"HTTP/{message.version} is not supported")
        message.method = parser.get_method().decode("ascii")
        message.keep_alive = parser.should_keep_alive()

    def on_body(self, body: bytes):
        self._current.body.append(body)

    def on_message_complete(self):
        self._current.complete = True


class RequestBody:
    """`wsgi.input`: the current request's body, received as it is read."""

    def __init__(self, connection: Connection, message: _Message):
        self._connection = connection
        self._message = message
        self._buffer = b""

    def _fill(self) -> bool:
        """More bytes into the buffer; False at the body's end."""
        message = self._message
        while not message.body:
            if message.complete:
                return False
            self._connection.receive_body(message)
        self._buffer += b"".join(message.body)
        message.body.clear()
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            data, self._buffer = self._buffer, b""
            return data
        while len(self._buffer) < size and self._fill():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        while b"\n" not in self._buffer and (size is None or size < 0 or len(self._buffer) < size) and self._fill():
            pass
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size is not None and size >= 0:
            end = min(end, size)
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return list(self)

    def __iter__(self):
        while line := self.readline():
            yield line


class _Date:
    """The Date header's value, formatted once a second."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True)
        return cls.value


class Connection:
    """One client connection: requests in, the app's answers out, until either side ends it."""

    def __init__(self, sock, addr, app, *, limits: Limits, keepalive: float, body_timeout: float,
                 server: tuple[str, int], alive=lambda: True, log=None):
        self._sock = sock
        self._app = app
        # keepalive 0 (gunicorn's "no keep-alive"): one request per connection, its head given the body's time.
        self._keep = keepalive > 0
        self._head_timeout = keepalive if keepalive > 0 else body_timeout
        self._body_timeout = body_timeout
        self._alive = alive
        self._log = log
        self._parser = _Parser(limits)
        self._base_environ = {
            "SCRIPT_NAME": "",
            "SERVER_NAME": server[0],
            "SERVER_PORT": str(server[1]),
            "REMOTE_ADDR": addr[0] if isinstance(addr, tuple) else "",
            "REMOTE_PORT": str(addr[1]) if isinstance(addr, tuple) else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,  # greenlets: as gunicorn's gevent worker says
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    def serve(self) -> None:
        sock = self._sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self._body_timeout)
            while True:
                try:
                    message = self._next_head()
                except RequestError as e:
                    self._refuse(e)
                    return
                if message is None or not self._answer(message):
                    return
        except OSError:
            pass  # the peer went away; nothing to answer
        finally:
            sock.close()

    def _receive(self) -> bytes:
        data = self._sock.recv(READ_SIZE)
        if data:
            self._parser.feed(data)
        return data

    def _next_head(self) -> _Message | None:
        """The next request whose head has arrived; None when the client closed or idled too long."""
        messages = self._parser.messages
        with gevent.Timeout(self._head_timeout, False):
            while not (messages and messages[0].head_done):
                if self._parser.upgraded or not self._receive():
                    if messages:  # a head cut off by the close
                        raise RequestError(400, "the request ended before its head did")
                    return None
            return messages[0]
        return None  # the keep-alive (or head) timeout passed

    def receive_body(self, message: _Message) -> None:
        """Bytes of the current request's body. A body cut off (or stalled for `body_timeout`) raises
        werkzeug's ClientDisconnected, which the app answers 400; the connection then closes."""
        if message.expects_continue:
            message.expects_continue = False
            self._sock.sendall(_CONTINUE)
        try:
            received = self._receive()
        except TimeoutError:
            raise ClientDisconnected("the request body did not arrive in time") from None
        except RequestError as e:
            raise ClientDisconnected(e.message) from None
        if not received or self._parser.upgraded:
            raise ClientDisconnected("the request ended before its body did")

    def _environ(self, message: _Message) -> dict:
        target = message.url.decode("latin-1")
        path = origin_form(target)
        if not path.startswith("/"):  # "*" (OPTIONS), an authority (CONNECT)
            raise RequestError(400, "the request target is not a path")
        path, _, query = path.partition("?")
        environ = {
            **self._base_environ,
            "REQUEST_METHOD": message.method,
            "PATH_INFO": unquote_to_bytes(path.partition("#")[0]).decode("latin-1"),
            "QUERY_STRING": query.partition("#")[0],
            "RAW_URI": target,
            "SERVER_PROTOCOL": f"HTTP/{message.version}",
            "wsgi.input": RequestBody(self, message),
        }
        for raw_name, raw_value in message.headers:
            name = raw_name.decode("latin-1").upper()
            if "_" in name:
                continue
            value = raw_value.decode("latin-1").rstrip(" \t")  # llhttp keeps trailing blanks (not part of the value)
            if name == "CONTENT-TYPE":
                key = "CONTENT_TYPE"
            elif name == "CONTENT-LENGTH":
                key = "CONTENT_LENGTH"
            else:
                key = "HTTP_" + name.replace("-", "_")
                if key == "HTTP_EXPECT" and value.lower() == "100-continue":
                    message.expects_continue = True
            if key in environ:
                if key == "HTTP_HOST":
                    raise RequestError(400, "the request has more than one Host header")
                value = f"{environ[key]},{value}"
            environ[key] = value
        if "HTTP_HOST" not in environ and message.version == "1.1":
            raise RequestError(400, "an HTTP/1.1 request needs a Host header")  # RFC 9112 §3.2
        return environ

    def _answer(self, message: _Message) -> bool:
        """Run the app for the next request; True when the connection may carry another one."""
        try:
            environ = self._environ(message)
        except RequestError as e:
            self._refuse(e)
            return False
        answer = _Answer(self._sock, message, reusable=lambda: self._reusable(message))
        try:
            result = self._app(environ, answer.start_response)
            try:
                for chunk in result:
                    if chunk:
                        answer.write(chunk)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            answer.finish()
        except ClientDisconnected as e:  # raised by wsgi.input, in an app that let it through
            if not answer.head_sent:
                self._refuse(RequestError(400, e.description))
            return False
        except OSError:
            return False  # the client went away mid-answer
        except Exception:
            if self._log is not None:  # the path only: a query string may carry a credential
                self._log.exception("error handling %s %s", message.method, environ["PATH_INFO"][:256])
            if not answer.head_sent:
                self._refuse(RequestError(500, "internal server error"))
            return False
        self._parser.messages.popleft()
        return answer.keep_alive

    def _reusable(self, message: _Message) -> bool:
        """Whether the connection may carry another request after this one's answer (asked when
        its head is built): both sides keep it, the body was read to its end, the worker goes on."""
        return self._keep and message.keep_alive and message.complete and not self._parser.upgraded and self._alive()

    def _refuse(self, error: RequestError) -> None:
        """The error in the OpenAI shape every other answer has, then the connection's end."""
        kind = "server_error" if error.status >= 500 else "invalid_request_error"
        body = json.dumps({"error": {"message": error.message, "type": kind, "param": None,
                                     "code": str(error.status)}}).encode()
        head = (f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\nDate: {_Date.now()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        try:
            self._sock.sendall(head.encode("ascii") + body)
            self._linger()
        except OSError:
            pass

    def _linger(self) -> None:
        """Read (and drop) what the client still sends before closing: closing with unread bytes makes
        the kernel send a reset, which can destroy the answer before the client reads it."""
        self._sock.shutdown(socket.SHUT_WR)
        dropped = 0
        with gevent.Timeout(LINGER_SECONDS, False):
            while dropped < LINGER_BYTES and (data := self._sock.recv(READ_SIZE)):
                dropped += len(data)



class _Answer:
    """One response: its head built at the first body bytes (or at the end) and sent with them."""

    def __init__(self, sock, message: _Message, *, reusable):
        self._sock = sock
        self._http10 = message.version == "1.0"
        self._reusable = reusable
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.head_sent = False
        self.keep_alive = False
        self._length: int | None = None  # the app's Content-Length
        self._sent = 0
        self._chunked = False
        self._no_body = message.method == "HEAD"

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info=None):
        if exc_info is not None and self.head_sent:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status = status
        self.headers = headers
        return self.write

    def _head(self, complete_body: bytes | None) -> bytes:
        """The status line and headers; `complete_body` when the whole body is known (no framing needed)."""
        if self.status is None:
            raise RuntimeError("the app sent a body before start_response")
        reusable = self._reusable()
        status = self.status.encode("latin-1")
        lines = [b"HTTP/1.1 ", status, b"\r\n"]
        for name, value in self.headers:
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
                raise ValueError(f"the app's response header {name[:64]!r} would split the head")
            lowered = name.lower()
            if lowered in _SERVER_OWNED:
                continue
            if lowered == "content-length":
                self._length = int(value)
            lines += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
        self._no_body = self._no_body or status.startswith(_NO_BODY_STATUSES)
        if not self._no_body and self._length is None:
            if complete_body is not None:
                self._length = len(complete_body)
                lines += [b"Content-Length: ", str(self._length).encode(), b"\r\n"]
            elif self._http10:
                reusable = False  # the close ends the body
            else:
                self._chunked = True
                lines.append(b"Transfer-Encoding: chunked\r\n")
        self.keep_alive = reusable
        lines += [b"Date: ", _Date.now().encode(), b"\r\n"]
        lines.append(b"\r\n" if reusable else b"Connection: close\r\n\r\n")
        self.head_sent = True
        return b"".join(lines)

    def write(self, data: bytes) -> None:
        head = b"" if self.head_sent else self._head(None)
        if self._no_body:
            if head:
                self._sock.sendall(head)
            return
        if self._length is not None:
            room = self._length - self._sent
            if len(data) > room:
                data = data[:room]
                self.keep_alive = False  # more than it announced: the connection ends with the announced bytes
            self._sent += len(data)
        elif self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._sock.sendall(head + data)

    def finish(self) -> None:
        if not self.head_sent:
            self._sock.sendall(self._head(b""))
        elif self._chunked:
            self._sock.sendall(b"0\r\n\r\n")
        elif self._length is not None and self._sent < self._length and not self._no_body:
            self.keep_alive = False  # fewer bytes than announced: only closing tells the client


class Worker(GeventWorker):
    """gunicorn's gevent worker serving each connection with `Connection`."""

    def init_process(self):
        cfg = self.cfg
        self._limits = Limits(cfg.limit_request_line or 4094, cfg.limit_request_fields or 100,
                              cfg.limit_request_field_size or 8190)
        super().init_process()

    def load_wsgi(self):
        super().load_wsgi()
        # What is loaded by now (modules, the app, its tables) lives as long as the worker: frozen,
        # a full collection no longer walks it (≈ 25 ms each here, a stall for every request in flight).
        gc.freeze()

    def handle(self, listener, client, addr):
        client.setblocking(1)
        host, port = listener.getsockname()[:2]
        Connection(client, addr, self.wsgi, limits=self._limits, keepalive=self.cfg.keepalive,
                   body_timeout=self.cfg.timeout, server=(host, port), alive=lambda: self.alive, log=self.log).serve()
