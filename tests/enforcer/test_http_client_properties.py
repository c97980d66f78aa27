"""Property tests of enforcer.http_client's response parser against h11, a reference HTTP/1.1 parser
used only here: random well-formed answers (every framing, interim answers, chunk extensions,
trailers, pipelined bytes) must be read exactly as h11 reads them, and mutated or cut ones must give
h11's message or a clean ProtocolError; never another exception, and never a connection back in the
pool after any framing anomaly (the desync of issue 11, item 1).

Each example is a real exchange over loopback TCP: the server sends the bytes and closes.
REGATE_PROPERTY_EXAMPLES raises the example count for a longer local run.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regate.enforcer.http_client import ConnectionPool, ProtocolError
from tests.support.properties import bounded
from tests.support.scripted_server import ScriptedServer

PROPERTY = bounded(150)

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VALUE_CHARS = "".join(chr(c) for c in range(0x21, 0x7f)) + " \t"
FRAMING_HEADERS = {"content-length", "transfer-encoding", "connection"}


@pytest.fixture(scope="module")
def server():
    s = ScriptedServer()
    yield s
    s.close()


@dataclass(frozen=True)
class Message:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]  # lower-case names; the framing ones left out (h11 normalises them)
    body: bytes
    trailers: tuple[tuple[bytes, bytes], ...]


def _fields(items) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n.lower(), v) for n, v in items if n.lower() not in (b"content-length", b"transfer-encoding"))


@dataclass(frozen=True)
class Reference:
    message: Message | None  # None: h11 found an error or an incomplete answer
    reusable: bool  # complete, kept alive, framed by length or chunks, and nothing after it


def reference(data: bytes) -> Reference:
    """How h11 reads `data` (then the connection's end) as the answer to a POST."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    response, body = None, b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return Reference(None, False)
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            message = Message(response.status_code, _fields(response.headers), body, _fields(event.headers))
            names = {name for name, _ in response.headers}
            framed = (response.status_code in (204, 304) or b"content-length" in names
                      or b"transfer-encoding" in names)
            connection_tokens = [t.strip().lower() for name, value in response.headers if name == b"connection"
                                 for t in value.split(b",")]
            keep_alive = response.http_version == b"1.1" and b"close" not in connection_tokens
            return Reference(message, framed and keep_alive and conn.trailing_data[0] == b"")
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return Reference(None, False)


def exchange(server: ScriptedServer, data: bytes) -> tuple[Message | None, bool]:
    """How regate's client reads `data`, then the connection's end: (the message, or None for a
    ProtocolError; whether the connection went back to the pool). Any other exception fails the test."""
    server.answer(data, close=True)
    pool = ConnectionPool("http", "127.0.0.1", server.port)
    try:
        response = pool.request("POST", "/", b"", {}, connect_timeout=5, timeout=10)
        body = response.read(1 << 20)
        response.release()
    except ProtocolError:
        return None, pool.idle_count > 0
    finally:
        reusable = pool.idle_count > 0
        pool.close()
    headers = _fields((n.encode("latin-1"), v.encode("latin-1")) for n, v in response.header_items)
    trailers = _fields((n.encode("latin-1"), v.encode("latin-1")) for n, v in response.trailers)
    return Message(response.status, headers, body, trailers), reusable


# generators ---------------------------------------------------------------------------------
names = st.text(TOKEN_CHARS, min_size=1, max_size=10).filter(lambda n: n.lower() not in FRAMING_HEADERS)
values = st.text(VALUE_CHARS, max_size=16).map(lambda v: v.strip(" \t"))
fields = st.lists(st.tuples(names, values), max_size=5)


@st.composite
def answers(draw) -> bytes:
    """A well-formed answer to a POST, possibly followed by pipelined bytes."""
    eol = draw(st.sampled_from(["\r\n", "\n"]))  # both parsers accept bare LF in the head

    def head(status: int, version: str, items) -> str:
        reason = draw(st.sampled_from(["", " ", " OK", " Some Reason"]))
        return f"{version} {status}{reason}{eol}" + "".join(f"{n}:{draw(st.sampled_from(['', ' ', '  ']))}{v}{eol}"
                                                             for n, v in items)

    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    out = "".join(head(s, version, draw(fields)) + eol
                  for s in draw(st.lists(st.sampled_from([100, 102, 103]), max_size=3)))
    status = draw(st.sampled_from([200, 201, 204, 304, 400, 404, 429, 500, 503]) | st.integers(200, 599))
    items = draw(fields)
    if draw(st.booleans()):
        items.append(("Connection", draw(st.sampled_from(["close", "keep-alive", "Close", "x, close"]))))
    body = b"" if status in (204, 304) else draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if framing == "length":
        items.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        items.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "Chunked"]))))
    items = draw(st.permutations(items))
    raw = (out + head(status, version, items) + eol).encode("latin-1")
    if framing == "chunked" and status not in (204, 304):
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)]) if b > a]
        for piece in pieces:
            size = draw(st.sampled_from(["{:x}", "{:X}", "{:04x}"])).format(len(piece))
            ext = draw(st.sampled_from(["", ";a=b", ';name="v"', ";x"]))
            raw += f"{size}{ext}\r\n".encode() + piece + b"\r\n"
        raw += b"0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in draw(fields)).encode("latin-1") + b"\r\n"
    else:
        raw += body
    if framing != "close":
        raw += draw(st.sampled_from([b"", b"", b"x", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"]))
    return raw


INTERESTING = [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b";", b",", b"0", b"9", b"a", b"\x00", b"\x01", b"\x7f",
               b"\xb2", b"\xff", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 3\r\n",
               b"HTTP/1.1 100 Continue\r\n\r\n", b"0\r\n\r\n"]


@st.composite
def mutated_answers(draw) -> bytes:
    data = bytearray(draw(answers()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "cut", "duplicate"]))
        at = draw(st.integers(0, len(data)))
        if kind == "replace" and at < len(data):
            data[at:at + 1] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=1))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=3))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 3))]
        elif kind == "cut":
            del data[at:]
        elif kind == "duplicate":
            end = draw(st.integers(at, min(len(data), at + 40)))
            data[at:at] = data[at:end]
    return bytes(data)


# properties ---------------------------------------------------------------------------------
@PROPERTY
@given(data=answers())
def test_well_formed_answers_are_read_as_the_reference_reads_them(server, data):
    expected = reference(data)
    assert expected.message is not None, "the generator made an answer h11 refuses"
    message, reusable = exchange(server, data)
    assert message == expected.message
    assert reusable == expected.reusable


@PROPERTY
@given(data=mutated_answers())
def test_mutated_answers_give_the_reference_message_or_a_clean_protocol_error(server, data):
    expected = reference(data)
    message, reusable = exchange(server, data)
    if message is not None:
        assert message == expected.message
    assert not reusable or (message is not None and expected.reusable)
