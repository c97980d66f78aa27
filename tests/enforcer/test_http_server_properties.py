"""Property tests of regate's server (enforcer.http_server) against h11, a reference HTTP/1.1 parser
used only here: random well-formed requests (every framing, duplicate and underscored headers,
chunk extensions, trailers, pipelining, bytes split across sends) must reach the app exactly as h11
reads them; mutated ones must be answered for exactly the requests h11 also reads, in order, and
then refused (4xx) or closed: never a request h11 does not see (a smuggled or desynchronised one),
never a 5xx, never a hang.

Each example is a real exchange over loopback TCP with the echo app of test_http_server.py.
REGATE_PROPERTY_EXAMPLES raises the example count for a longer local run.
"""

from __future__ import annotations

import json
import re
import socket
import time

import h11
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.enforcer.test_http_server import server  # noqa: F401 - the module's server fixture
from tests.support.properties import bounded

PROPERTY = bounded(150)

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VALUE_CHARS = "".join(chr(c) for c in range(0x21, 0x7f))
PATH_CHARS = "abcXYZ0189-._~!$&'()*+,;=:@"
# Framing and interim-answer headers are the strategy's own; the rest are free.
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te", "keep-alive"}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

header_name = st.text(TOKEN, min_size=1, max_size=12).filter(lambda n: n.lower() not in RESERVED)
header_value = st.builds(lambda a, b: (a + " " + b).strip(), st.text(VALUE_CHARS, max_size=12),
                         st.text(VALUE_CHARS, max_size=12))
segment = st.one_of(st.text(PATH_CHARS, min_size=1, max_size=8),
                    st.sampled_from(["%41", "%2F", "%20", "%e2%82%ac", "%25"]))
target = st.builds(lambda segs, q: "/p/" + "/".join(segs) + (f"?{q}" if q is not None else ""),
                   st.lists(segment, max_size=4), st.one_of(st.none(), st.text(PATH_CHARS + "=&%/?", max_size=10)))


@st.composite
def request(draw) -> bytes:
    method = draw(st.sampled_from(METHODS))
    lines = [f"{method} {draw(target)} HTTP/1.1", "Host: example.test"]
    lines += [f"{n}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}{v}{draw(st.sampled_from(['', ' ']))}"
              for n, v in draw(st.lists(st.tuples(header_name, header_value), max_size=5))]
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    if framing == "none" or (framing == "length" and not body and draw(st.booleans())):
        body = b""
        if framing == "length":
            lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    lines.append("Transfer-Encoding: chunked")
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if b > a]
    encoded = b"".join(b"%x%b\r\n%b\r\n" % (len(p), b";ext=1" if draw(st.booleans()) else b"", p) for p in pieces)
    trailer = b"X-Trailer: t\r\n" if draw(st.booleans()) else b""
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + encoded + b"0\r\n" + trailer + b"\r\n"


def h11_requests(data: bytes) -> list[dict]:
    """The requests h11 reads, complete, in order (as the echo app reports them), until it stops.

    CR and LF bytes before a request line are skipped first, as llhttp does and RFC 9112 §2.2 allows
    (a server SHOULD ignore empty lines there); h11 does not, so each request gets a fresh h11
    connection fed what the previous one left, without them.
    """
    found = []
    while data := data.lstrip(b"\r\n"):
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(data)
        conn.receive_data(b"")  # the client is done sending
        current = None
        try:
            while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                if isinstance(event, h11.Request):
                    current = {"method": event.method.decode(), "raw_uri": event.target.decode("latin-1"),
                               "headers": _environ_headers(event.headers), "body": b""}
                elif isinstance(event, h11.Data):
                    current["body"] += bytes(event.data)
                else:  # NEED_DATA after the end, or the close: cut off
                    return found
        except h11.RemoteProtocolError:
            return found
        current["body"] = current["body"].decode("latin-1")
        found.append(current)
        data = conn.trailing_data[0]
    return found


def _environ_headers(headers) -> dict[str, str]:
    """A request's headers as the WSGI environ names them: dashes to `_`, duplicates joined by ','."""
    found: dict[str, str] = {}
    for name, value in headers:
        key = name.decode().upper()
        if "_" in key:
            continue  # dropped by the server (an alias of the dashed name in WSGI)
        key = key.replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        value = value.decode("latin-1")
        found[key] = found[key] + "," + value if key in found else value
    return found


def exchange(port: int, data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    """Send `data` (split at `cuts`), end the sending side, and read every answer until the server closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        previous = 0
        try:
            for cut in [*sorted(c for c in cuts if 0 < c < len(data)), len(data)]:
                sock.sendall(data[previous:cut])
                previous = cut
                time.sleep(0.001)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused and closed before all was sent; its answer is still to be read
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    finally:
        sock.close()
    answers = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"a cut-off answer head: {raw[:200]!r}"
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        length = int(fields[b"Content-Length"])
        answers.append((status, rest[:length]))
        raw = rest[length:]
    return answers


def echoed(body: bytes) -> dict:
    doc = json.loads(body)
    return {k: doc[k] for k in ("method", "raw_uri", "headers", "body")}


@PROPERTY
@given(requests=st.lists(request(), min_size=1, max_size=3), cuts=st.lists(st.integers(0, 2000), max_size=4))
def test_well_formed_requests_reach_the_app_as_h11_reads_them(server, requests, cuts):  # noqa: F811
    data = b"".join(requests)
    expected = h11_requests(data)
    assert len(expected) == len(requests)  # the strategy writes only requests h11 accepts
    answers = exchange(server, data, cuts)
    assert [status for status, _ in answers] == [200] * len(requests)
    assert [echoed(body) for _, body in answers] == expected


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(b"".join(draw(st.lists(request(), min_size=1, max_size=2))))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.one_of(st.sampled_from(list(b"\r\n :;\t\x00\x7f\xff0aZ-_,")), st.integers(0, 255)))
        if kind == "insert":
            data.insert(at, byte)
        elif at < len(data):
            if kind == "replace":
                data[at] = byte
            else:
                del data[at]
    return bytes(data)


# Repeated spaces between a request line's parts: llhttp reads them as one (RFC 9112 §3 lets a
# recipient parse on whitespace boundaries; the framing is untouched), h11 refuses them. That
# reading is pinned by test_http_server.test_repeated_spaces_in_the_request_line_read_as_one.
# (Looked for anywhere: a pipelined request line may follow a body on the same line.)
_REPEATED_SPACES = re.compile(rb"[!-~] {2,}/|[!-~] /[!-~]* {2,}HTTP/")


@PROPERTY
@given(data=mutated(), cuts=st.lists(st.integers(0, 2000), max_size=3))
def test_mutated_requests_are_served_only_as_h11_reads_them(server, data, cuts):  # noqa: F811
    assume(not _REPEATED_SPACES.search(data))
    expected = h11_requests(data)
    answers = exchange(server, data, cuts)
    served = [echoed(body) for status, body in answers if status == 200]
    assert served == expected[: len(served)], "the server read a request h11 did not"
    refusals = [status for status, _ in answers if status != 200]
    assert all(400 <= s < 500 or s == 505 for s in refusals), answers
    # Every answer after a refusal would be a request read past a framing error.
    assert len(refusals) <= 1 and (not refusals or answers[-1][0] != 200), answers
