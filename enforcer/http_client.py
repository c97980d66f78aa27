"""A small HTTP/1.1 client for the model upstreams and OPA: keep-alive pools, one send per request.

Why not urllib3 (the JWKS fetcher, off the hot path, still uses it): on the proxy's hot
path its layers (retries, timeout objects, header dicts, http.client underneath) cost
~300 µs of CPU per call here, the largest share of the worker's time (bench/results.md).
This client does only what forwarding and decisions need:

- a request whose head and body go out in one `sendall` (no Nagle stall);
- responses framed by Content-Length, chunked transfer coding, or the connection's end;
  interim 1xx answers skipped (at most MAX_INTERIM); the grammar is ASCII-only and strict
  (RFC 9112: token header names, no control bytes in values, one unambiguous framing):
  anything else raises ProtocolError, and h11 is its reference in the property tests;
- `read_some()` returns what has arrived (for SSE pass-through), decoded of chunking;
- a connection goes back to its pool only when its answer was read exactly to its end:
  neither side asked to close, the framing was unambiguous, and no byte beyond the answer
  is buffered (here or in the TLS layer). Bytes after an answer are a desync (a lying
  Content-Length, a 204 with a body): reused, they would be the next caller's answer. A
  pooled connection the peer closed, or that received bytes while idle, is dropped at checkout;
- TLS with certificate and host name verification (the system's CAs unless a context
  is given), HTTP/1.1 by ALPN.

Timeouts are the caller's: `connect_timeout` bounds the TCP connect and the TLS
handshake; `timeout` every later send or read (a gap); `deadline` (time.monotonic())
the exchange as a whole, so bytes dripped one at a time, endless interim answers or
trailers cannot hold it open: the request and the answer's head must be done by then
(default: `timeout` after the start), and the body by the deadline `Response.set_deadline`
sets (the head's, until changed). Under gevent's monkey-patching the sockets are cooperative.
"""

from __future__ import annotations

import ipaddress
import re
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Mapping

MAX_LINE = 64 * 1024  # a chunk-size line
MAX_SECTION = 64 * 1024  # a status line with its header section, or a trailer section
MAX_HEADERS = 100  # header lines of one answer, and trailer lines
MAX_INTERIM = 10  # 1xx answers before the real one
READ_SIZE = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
# RFC 9110 grammar, ASCII only: str.isdigit() and \d would accept "²" or "٣".
_STATUS_LINE = re.compile(r"(HTTP/1\.[01]) ([1-9][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?\r?\n")
# A header (or trailer) line: a token, a colon, a value of visible characters, blanks and obs-text,
# CRLF or LF. A CR anywhere else, NUL or another control byte makes the section malformed.
# (The value is runs of visible characters between blanks, as h11 writes it: no two ways to match a
# line, so no backtracking that grows with its length.)
_FIELD = (r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
          r"((?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?)[ \t]*\r?\n")
_FIELDS = re.compile(f"(?:{_FIELD})*")
_FIELD_ITEM = re.compile(_FIELD)
_SECTION_END = re.compile(rb"\n\r?\n")
_DIGITS = re.compile(r"[0-9]{1,18}")
# A chunk-size line: the size, an optional extension (ignored), optional trailing blanks, CRLF.
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:;[\t\x20-\x7e\x80-\xff]*)?[ \t]*\r\n")


class HTTPClientError(Exception):
    """Root of this module's errors."""


class ConnectError(HTTPClientError):
    """Raised when no connection to the upstream could be opened."""


class ConnectTimeout(ConnectError):
    """Raised when opening the connection took longer than the connect timeout."""


class TLSError(ConnectError):
    """Raised when the TLS handshake fails (certificate, host name, protocol)."""


class ProtocolError(HTTPClientError):
    """Raised when the answer is not well-formed HTTP/1.1."""


class IncompleteAnswer(ProtocolError):
    """Raised when the connection ends before the answer does."""


class StaleConnection(HTTPClientError):
    """Raised when a kept-alive connection turned out closed or reset before any byte of the
    answer: the peer may have dropped it while idle, so the request may be sent again."""


class _Connection:
    """A socket and its receive buffer; every read bounded by the per-read timeout and the deadline."""

    __slots__ = ("sock", "buffer", "timeout", "deadline", "received")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()
        self.timeout = 0.0
        self.deadline = 0.0
        self.received = 0  # bytes received for the current exchange

    def holds_unread(self) -> bool:
        """True when bytes nobody asked for are buffered here or decrypted in the TLS layer."""
        return bool(self.buffer) or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0)

    def dropped(self) -> bool:
        """True when an idle connection was closed by the peer or has unexpected bytes."""
        if self.holds_unread():
            return True
        try:
            if isinstance(self.sock, ssl.SSLSocket):  # TLS refuses recv flags
                # (Without gevent, select() refuses descriptors above 1023: then reconnect.)
                return bool(select.select([self.sock], [], [], 0)[0])
            self.sock.settimeout(0)  # under gevent too: raise at once instead of waiting
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False  # nothing to read: alive
        except (OSError, ValueError):
            return True
        return True  # the peer's end (b"") or bytes nobody asked for

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self._wait())
        self.sock.sendall(data)

    def fill(self) -> bool:
        """One receive into the buffer; False at the connection's end."""
        self.sock.settimeout(self._wait())
        data = self.sock.recv(READ_SIZE)
        if not data:
            return False
        self.received += len(data)
        self.buffer += data
        return True

    def section(self, what: str) -> str:
        """The lines up to the first empty one, as latin-1 text with their line ends (the empty
        line is consumed, not returned); ProtocolError beyond MAX_SECTION bytes."""
        start = 0
        while True:
            buffer = self.buffer
            if buffer[:1] == b"\n" or buffer[:2] == b"\r\n":
                del buffer[:1 if buffer[:1] == b"\n" else 2]
                return ""
            match = _SECTION_END.search(buffer, start)
            if match is not None:
                break
            if len(buffer) > MAX_SECTION:
                raise ProtocolError(f"the {what} is longer than {MAX_SECTION} bytes")
            start = max(len(buffer) - 2, 0)
            if not self.fill():
                raise IncompleteAnswer(f"the connection ended in the {what}" if self.buffer or self.received
                                       else "the connection ended before an answer")
        if match.end() > MAX_SECTION:
            raise ProtocolError(f"the {what} is longer than {MAX_SECTION} bytes")
        text = self.buffer[:match.start() + 1].decode("latin-1")
        del self.buffer[:match.end()]
        return text

    def line(self, what: str) -> bytes:
        """One line of a chunked body, with its end; ProtocolError when longer than MAX_LINE."""
        start = 0
        while (end := self.buffer.find(b"\n", start)) < 0:
            if len(self.buffer) > MAX_LINE:
                raise ProtocolError(f"the {what} is longer than {MAX_LINE} bytes")
            start = len(self.buffer)
            if not self.fill():
                raise IncompleteAnswer(f"the connection ended in the {what}")
        if end >= MAX_LINE:
            raise ProtocolError(f"the {what} is longer than {MAX_LINE} bytes")
        line = bytes(self.buffer[:end + 1])
        del self.buffer[:end + 1]
        return line

    def read1(self, size: int) -> bytes:
        """Up to `size` buffered bytes, else those of one receive; b"" at the connection's end."""
        if not self.buffer and not self.fill():
            return b""
        with memoryview(self.buffer) as view:
            data = bytes(view[:size])
        del self.buffer[:size]
        return data

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked on it in another thread
        except OSError:
            pass
        self.sock.close()

    def _wait(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the exchange's deadline passed")
        return min(self.timeout, remaining)


class ConnectionPool:
    """Keep-alive connections to one origin. Connections are opened on demand; at most
    `maxsize` idle ones are kept (most recently used first)."""

    def __init__(self, scheme: str, host: str, port: int | None, *, maxsize: int = 1024,
                 ssl_context: ssl.SSLContext | None = None):
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        self.scheme = scheme
        self.host = host
        self.port = port or (443 if scheme == "https" else 80)
        default_port = self.port == (443 if scheme == "https" else 80)
        name = f"[{host}]" if ":" in host else host
        self._host_header = name if default_port else f"{name}:{self.port}"
        self._maxsize = maxsize
        self._family = _address_family(host)  # an IP address is connected to without a name lookup
        self._idle: deque[_Connection] = deque()
        self._ssl_context = ssl_context if scheme == "https" else None
        if scheme == "https" and ssl_context is None:
            self._ssl_context = ssl.create_default_context()
            self._ssl_context.set_alpn_protocols(["http/1.1"])

    @property
    def idle_count(self) -> int:
        """Connections waiting in the pool for their next request."""
        return len(self._idle)

    def request(self, method: str, target: str, body: bytes, headers: Mapping[str, str], *,
                connect_timeout: float, timeout: float, deadline: float | None = None) -> Response:
        """Send one request and return once the answer's status line and headers are read.

        Raises StaleConnection when a reused connection ended before any answer byte,
        TimeoutError when `timeout` (a gap) or `deadline` (the request and head) runs out.
        """
        head = [f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        message = "".join(head).encode("latin-1") + body
        if deadline is None:
            deadline = time.monotonic() + timeout
        connection, reused = self._checkout(min(connect_timeout, max(deadline - time.monotonic(), 0.001)))
        connection.timeout, connection.deadline, connection.received = timeout, deadline, 0
        try:
            connection.send(message)
            return Response(self, connection, method)
        except (IncompleteAnswer, ConnectionError) as exc:
            connection.close()
            if reused and connection.received == 0:
                raise StaleConnection(f"the kept-alive connection to {self.host}:{self.port} was closed: {exc}") \
                    from None
            raise
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()

    def _checkout(self, connect_timeout: float) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if not connection.dropped():
                return connection, True
            connection.close()
        return self._connect(connect_timeout), False

    def _connect(self, connect_timeout: float) -> _Connection:
        try:
            if self._family is None:
                sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
            else:
                # create_connection would resolve the address: under gevent, a trip through its
                # resolver's thread pool (~200 µs of CPU per connection here).
                sock = socket.socket(self._family, socket.SOCK_STREAM)
                try:
                    sock.settimeout(connect_timeout)
                    sock.connect((self.host, self.port))
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise ConnectTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)
        except TimeoutError:
            sock.close()
            raise ConnectTimeout(f"the TLS handshake with {self.host}:{self.port} timed out") from None
        except ssl.SSLError as exc:
            sock.close()
            raise TLSError(f"TLS with {self.host}:{self.port} failed: {exc.reason or exc}") from None
        except OSError as exc:
            sock.close()
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        return _Connection(sock)

    def _checkin(self, connection: _Connection) -> None:
        if len(self._idle) < self._maxsize:
            self._idle.append(connection)
        else:
            connection.close()


class Response:
    """An answer whose status and headers were read; the body is read with `read_some`.

    `headers` maps lower-case names to values (repeated headers joined by ", ");
    `header_items` keeps the names as sent; `trailers` the trailer fields of a chunked
    body once it is read. Call `release()` when done: the connection is reused only if
    the body was read exactly to its end.
    """

    def __init__(self, pool: ConnectionPool, connection: _Connection, method: str):
        self._pool = pool
        self._connection = connection
        self._released = False
        for _ in range(MAX_INTERIM + 1):
            self.status, version, self.header_items = self._read_head()
            if self.status == 101:
                raise ProtocolError("the answer switches protocols (101), which was not asked for")
            if not 100 <= self.status < 200:
                break  # interim answers (100 Continue, 103 Early Hints) precede the real one
        else:
            raise ProtocolError(f"the answer has more than {MAX_INTERIM} interim (1xx) answers")
        self.headers: dict[str, str] = {}
        for name, value in self.header_items:
            key = name.lower()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        self.trailers: list[tuple[str, str]] = []
        self._will_close = version == "HTTP/1.0" or "close" in _tokens(self.headers.get("connection", ""))
        self._chunked = False
        self._chunk_left = 0
        self._chunk_end_pending = False
        self._remaining: int | None = None  # bytes of a Content-Length body still to read
        self.done = False
        if "transfer-encoding" in self.headers:
            # One framing only: a Transfer-Encoding beside a Content-Length, or any coding but
            # chunked, is how responses are smuggled (RFC 9112 §6.3 "ought to be handled as an error").
            if self.headers["transfer-encoding"].lower() != "chunked" or "content-length" in self.headers:
                raise ProtocolError("the answer's Transfer-Encoding is not exactly 'chunked' without a Content-Length")
        length = _content_length(self.headers["content-length"]) if "content-length" in self.headers else None
        if method == "HEAD" or self.status in _NO_BODY_STATUSES:
            self._remaining = 0
        elif "transfer-encoding" in self.headers:
            self._chunked = True
        elif length is not None:
            self._remaining = length
        else:
            self._will_close = True
        if self._remaining == 0:
            self.done = True

    def set_timeout(self, seconds: float) -> None:
        """Bound each later read by `seconds`."""
        self._connection.timeout = seconds

    def set_deadline(self, deadline: float) -> None:
        """Bound the rest of the answer by `deadline` (time.monotonic())."""
        self._connection.deadline = deadline

    def read_some(self, size: int) -> bytes:
        """Up to `size` body bytes, at most one socket read when none are buffered; b"" at the end.

        Raises TimeoutError when the wait or the deadline runs out, ProtocolError when the
        answer ends early or is malformed, OSError when the connection breaks.
        """
        if self.done or self._released:
            return b""
        if self._chunked:
            return self._read_chunked(size)
        if self._remaining is None:  # delimited by the connection's end
            data = self._connection.read1(size)
            if not data:
                self.done = True
            return data
        data = self._connection.read1(min(size, self._remaining))
        if not data:
            raise IncompleteAnswer(f"the connection ended {self._remaining} bytes before the end of the answer")
        self._remaining -= len(data)
        if self._remaining == 0:
            self.done = True
        return data

    def read(self, limit: int) -> bytes:
        """The whole (rest of the) body; ProtocolError when it is longer than `limit` bytes."""
        parts: list[bytes] = []
        size = 0
        while data := self.read_some(READ_SIZE):
            size += len(data)
            if size > limit:
                raise ProtocolError(f"the answer is longer than {limit} bytes")
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back to the pool if the answer was read exactly to its end, else close it."""
        if self._released:
            return
        self._released = True
        if self.done and not self._will_close and not self._connection.holds_unread():
            self._pool._checkin(self._connection)
        else:
            self._connection.close()

    def close(self) -> None:
        """Close the connection, whatever was read."""
        if not self._released:
            self._released = True
            self._connection.close()

    # internals ------------------------------------------------------------------------
    def _read_head(self) -> tuple[int, str, list[tuple[str, str]]]:
        """Status, HTTP version and header fields of one answer (an interim one, or the final one)."""
        head = self._connection.section("header section")
        match = _STATUS_LINE.match(head)
        if match is None:
            raise ProtocolError("the answer does not start with an HTTP/1.x status line")
        return int(match.group(2)), match.group(1), _fields(head, match.end(), "header")

    def _read_chunked(self, size: int) -> bytes:
        connection = self._connection
        if self._chunk_left == 0:
            if self._chunk_end_pending:  # read here, not after the data: that is passed on at once
                if connection.line("chunk end") != b"\r\n":
                    raise ProtocolError("a chunk of the answer is longer than its size says")
                self._chunk_end_pending = False
            match = _CHUNK_LINE.fullmatch(connection.line("chunk size"))
            if match is None:
                raise ProtocolError("the answer has a malformed chunk size")
            self._chunk_left = int(match.group(1), 16)
            if self._chunk_left == 0:
                self.trailers = _fields(connection.section("trailer section"), 0, "trailer")
                self.done = True
                return b""
        data = connection.read1(min(size, self._chunk_left))
        if not data:
            raise IncompleteAnswer("the connection ended inside a chunk of the answer")
        self._chunk_left -= len(data)
        self._chunk_end_pending = self._chunk_left == 0
        return data


def _fields(text: str, start: int, kind: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of a header or trailer section, whole lines from `start` on."""
    if not _FIELDS.fullmatch(text, start):
        raise ProtocolError(f"the answer has a malformed header line (in its {kind} section)")
    items = _FIELD_ITEM.findall(text, start)
    if len(items) > MAX_HEADERS:
        raise ProtocolError(f"the answer has more than {MAX_HEADERS} {kind}s")
    return items


def _address_family(host: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 for an IP address, None for a name."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def _content_length(value: str) -> int:
    values = {v.strip(" \t") for v in value.split(",")}
    if len(values) != 1 or not _DIGITS.fullmatch(length := values.pop()):
        raise ProtocolError("the answer has an invalid Content-Length")
    return int(length)
