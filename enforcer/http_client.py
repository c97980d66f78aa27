"""A small HTTP/1.1 client for the model upstreams and OPA: keep-alive pools, one send per request.

Why not urllib3 (the JWKS fetcher, off the hot path, still uses it): on the proxy's hot
path its layers (retries, timeout objects, header dicts, http.client underneath) cost
~300 µs of CPU per call here, the largest share of the worker's time (bench/results.md).
This client does only what forwarding and decisions need:

- a request whose head and body go out in one `sendall` (no Nagle stall);
- responses framed by Content-Length, chunked transfer coding, or the connection's end;
  interim 1xx answers skipped; malformed or early-ended answers raise ProtocolError;
- `read_some()` returns what has arrived (for SSE pass-through), decoded of chunking;
- a connection goes back to its pool only when its answer was read to the end and
  neither side asked to close; a pooled connection the peer closed is dropped at checkout;
- TLS with certificate and host name verification (the system's CAs unless a context
  is given), HTTP/1.1 by ALPN.

Timeouts are the caller's: `connect_timeout` bounds the TCP connect and the TLS
handshake, `timeout` every later send or read (`Response.set_timeout` changes it).
Under gevent's monkey-patching the sockets here are cooperative.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
from collections import deque
from collections.abc import Mapping

MAX_LINE = 64 * 1024  # status line, header line, chunk-size line
MAX_HEADERS = 100
_NO_BODY_STATUSES = frozenset({204, 304})
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


class HTTPClientError(Exception):
    """Root of this module's errors."""


class ConnectError(HTTPClientError):
    """Raised when no connection to the upstream could be opened."""


class ConnectTimeout(ConnectError):
    """Raised when opening the connection took longer than the connect timeout."""


class TLSError(ConnectError):
    """Raised when the TLS handshake fails (certificate, host name, protocol)."""


class ProtocolError(HTTPClientError):
    """Raised when the answer is not well-formed HTTP/1.1 or the connection ends before it does."""


class _Connection:
    __slots__ = ("sock", "reader")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = sock.makefile("rb", buffering=64 * 1024)

    def dropped(self) -> bool:
        """True when an idle connection was closed by the peer (or has unexpected bytes)."""
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

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


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
        self._idle: deque[_Connection] = deque()
        self._ssl_context = ssl_context if scheme == "https" else None
        if scheme == "https" and ssl_context is None:
            self._ssl_context = ssl.create_default_context()
            self._ssl_context.set_alpn_protocols(["http/1.1"])

    def request(self, method: str, target: str, body: bytes, headers: Mapping[str, str], *,
                connect_timeout: float, timeout: float) -> Response:
        """Send one request and return once the answer's status line and headers are read."""
        head = [f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        message = "".join(head).encode("latin-1") + body
        connection = self._checkout(connect_timeout)
        try:
            connection.sock.settimeout(timeout)
            connection.sock.sendall(message)
            return Response(self, connection, method)
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()

    def _checkout(self, connect_timeout: float) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.dropped():
                return connection
            connection.close()
        return self._connect(connect_timeout)

    def _connect(self, connect_timeout: float) -> _Connection:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
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
    `header_items` keeps the names as sent. Call `release()` when done: the connection
    is reused only if the body was read to its end.
    """

    def __init__(self, pool: ConnectionPool, connection: _Connection, method: str):
        self._pool = pool
        self._connection = connection
        self._reader = connection.reader
        self._released = False
        while True:
            self.status, version = self._read_status_line()
            self.header_items = self._read_headers()
            if not 100 <= self.status < 200:
                break  # interim answers (100 Continue, 103 Early Hints) precede the real one
        self.headers: dict[str, str] = {}
        for name, value in self.header_items:
            key = name.lower()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        self._will_close = version == "HTTP/1.0" or "close" in _tokens(self.headers.get("connection", ""))
        self._chunked = False
        self._chunk_left = 0
        self._chunk_end_pending = False
        self._remaining: int | None = None  # bytes of a Content-Length body still to read
        self.done = False
        codings = _tokens(self.headers.get("transfer-encoding", ""))
        if method == "HEAD" or self.status in _NO_BODY_STATUSES:
            self._remaining = 0
        elif codings:
            # A Transfer-Encoding wins over Content-Length; one not ending in chunked runs to the close.
            self._chunked = codings[-1] == "chunked"
            self._will_close = self._will_close or not self._chunked or "content-length" in self.headers
        elif "content-length" in self.headers:
            self._remaining = _content_length(self.headers["content-length"])
        else:
            self._will_close = True
        if self._remaining == 0:
            self.done = True

    def set_timeout(self, seconds: float) -> None:
        """Bound each later read by `seconds`."""
        self._connection.sock.settimeout(seconds)

    def read_some(self, size: int) -> bytes:
        """Up to `size` body bytes, at most one socket read when none are buffered; b"" at the end.

        Raises TimeoutError when the wait runs out, ProtocolError when the answer ends early
        or is malformed, OSError when the connection breaks.
        """
        if self.done or self._released:
            return b""
        if self._chunked:
            return self._read_chunked(size)
        if self._remaining is None:  # delimited by the connection's end
            data = self._reader.read1(size)
            if not data:
                self.done = True
            return data
        data = self._reader.read1(min(size, self._remaining))
        if not data:
            raise ProtocolError(f"the connection ended {self._remaining} bytes before the end of the answer")
        self._remaining -= len(data)
        if self._remaining == 0:
            self.done = True
        return data

    def read(self, limit: int) -> bytes:
        """The whole (rest of the) body; ProtocolError when it is longer than `limit` bytes."""
        parts: list[bytes] = []
        size = 0
        while data := self.read_some(64 * 1024):
            size += len(data)
            if size > limit:
                raise ProtocolError(f"the answer is longer than {limit} bytes")
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back to the pool if the answer was read to its end, else close it."""
        if self._released:
            return
        self._released = True
        if self.done and not self._will_close:
            self._pool._checkin(self._connection)
        else:
            self._connection.close()

    def close(self) -> None:
        """Close the connection, whatever was read."""
        if not self._released:
            self._released = True
            self._connection.close()

    # internals ------------------------------------------------------------------------
    def _line(self, what: str) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError(f"the {what} is longer than {MAX_LINE} bytes")
        if not line.endswith(b"\n"):
            raise ProtocolError(f"the connection ended in the {what}" if line or what != "status line"
                                else "the connection ended before an answer")
        return line

    def _read_status_line(self) -> tuple[int, str]:
        parts = self._line("status line").decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not (
                len(parts[1]) == 3 and parts[1].isdigit()):
            raise ProtocolError("the answer does not start with an HTTP/1.x status line")
        return int(parts[1]), parts[0]

    def _read_headers(self) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        while True:
            line = self._line("header section")
            if line in (b"\r\n", b"\n"):
                return items
            if len(items) == MAX_HEADERS:
                raise ProtocolError(f"the answer has more than {MAX_HEADERS} headers")
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip():
                raise ProtocolError("the answer has a malformed header line")
            items.append((name, value.strip()))

    def _read_chunked(self, size: int) -> bytes:
        if self._chunk_left == 0:
            if self._chunk_end_pending:  # read here, not after the data: that is passed on at once
                if self._line("chunk end") not in (b"\r\n", b"\n"):
                    raise ProtocolError("a chunk of the answer is longer than its size says")
                self._chunk_end_pending = False
            size_field = self._line("chunk size").split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_field):
                raise ProtocolError("the answer has a malformed chunk size")
            self._chunk_left = int(size_field, 16)
            if self._chunk_left == 0:
                while self._line("trailer section") not in (b"\r\n", b"\n"):
                    pass
                self.done = True
                return b""
        data = self._reader.read1(min(size, self._chunk_left))
        if not data:
            raise ProtocolError("the connection ended inside a chunk of the answer")
        self._chunk_left -= len(data)
        self._chunk_end_pending = self._chunk_left == 0
        return data


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def _content_length(value: str) -> int:
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1 or not (length := values.pop()).isdigit():
        raise ProtocolError("the answer has an invalid Content-Length")
    return int(length)
