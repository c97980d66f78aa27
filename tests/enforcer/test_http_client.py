"""enforcer.http_client against a loopback server that answers with scripted bytes."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest

from regate.enforcer.http_client import ConnectError, ConnectionPool, ProtocolError
from tests.support.net import free_port
from tests.support.scripted_server import ScriptedServer

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


@pytest.fixture
def pool(server):
    p = ConnectionPool("http", "127.0.0.1", server.port)
    yield p
    p.close()


def post(pool: ConnectionPool, body: bytes = b'{"q":1}', *, size: int = 4):
    """One exchange read in small pieces; returns (response, body)."""
    response = pool.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"},
                            connect_timeout=2, timeout=2)
    parts = []
    while data := response.read_some(size):
        parts.append(data)
    response.release()
    return response, b"".join(parts)


def test_request_is_sent_in_http11_form_with_host_and_length(server, pool):
    server.answer(OK_HEAD + b"Content-Length: 2\r\n\r\n{}")
    response, body = post(pool, b'{"model":"m"}')
    assert (response.status, body) == (200, b"{}")
    assert server.requests[0] == (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                  b"Content-Type: application/json\r\nContent-Length: 13\r\n\r\n"
                                  b'{"model":"m"}' % server.port)


@pytest.mark.parametrize("answer, body", [
    (OK_HEAD + b"Content-Length: 11\r\n\r\nhello world", b"hello world"),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
     b"hello world"),
    (OK_HEAD + b"transfer-encoding: Chunked\r\n\r\nB\r\nhello world\r\n0\r\n\r\n", b"hello world"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
     + OK_HEAD + b"Content-Length: 2\r\n\r\nok", b"ok"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
])
def test_framed_answers_are_read_whole_and_the_connection_is_reused(server, pool, answer, body):
    server.answer(answer)
    server.answer(OK_HEAD + b"Content-Length: 4\r\n\r\nnext")
    assert post(pool)[1] == body
    assert post(pool)[1] == b"next"
    assert server.connections == 1


@pytest.mark.parametrize("answer", [
    OK_HEAD + b"Connection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
])
def test_an_answer_that_closes_is_not_reused(server, pool, answer):
    server.answer(answer)
    server.answer(OK_HEAD + b"Content-Length: 4\r\n\r\nnext")
    assert post(pool)[1] == b"ok"
    assert post(pool)[1] == b"next"
    assert server.connections == 2


def test_body_delimited_by_the_close_is_read_to_the_end(server, pool):
    server.answer(OK_HEAD + b"\r\n" + b"x" * 1000, close=True)
    response, body = post(pool, size=64)
    assert body == b"x" * 1000 and response.done


def test_idle_connection_closed_by_the_server_is_replaced(server, pool):
    server.answer(OK_HEAD + b"Content-Length: 2\r\n\r\nok")
    server.answer(OK_HEAD + b"Content-Length: 4\r\n\r\nnext")
    assert post(pool)[1] == b"ok"
    server.close_idle_connections()  # the keep-alive timeout of a real server
    # Wait for the FIN to arrive (readable: the peer's end); the check at checkout sees it, it does not wait for it.
    [idle] = pool._idle
    assert select.select([idle.sock], [], [], 10)[0]
    assert post(pool)[1] == b"next"
    assert server.connections == 2


def test_half_read_answer_closes_its_connection(server, pool):
    server.answer(OK_HEAD + b"Content-Length: 10\r\n\r\n0123456789")
    server.answer(OK_HEAD + b"Content-Length: 4\r\n\r\nnext")
    response = pool.request("POST", "/", b"", {}, connect_timeout=2, timeout=2)
    assert response.read_some(3) == b"012"
    response.release()
    assert post(pool)[1] == b"next"
    assert server.connections == 2


@pytest.mark.parametrize("answer, message", [
    (b"", "the connection ended before an answer"),
    (b"HTTP/2 200 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 20 OK\r\n\r\n", "status line"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", "more than 100 headers"),
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", "longer than"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "the connection ended in the header section"),
])
def test_malformed_heads_are_protocol_errors(server, pool, answer, message):
    server.answer(answer, close=True)
    with pytest.raises(ProtocolError, match=message):
        pool.request("POST", "/", b"", {}, connect_timeout=2, timeout=2)


@pytest.mark.parametrize("answer, message", [
    (OK_HEAD + b"Content-Length: 10\r\n\r\nshort", "5 bytes before the end"),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", "longer than its size"),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n10\r\nhello", "inside a chunk"),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "ended in the chunk size"),
    # Unicode digits, control bytes (issue 11, item 8): an ASCII-only grammar, clean protocol errors.
    # header bytes are read as latin-1, where "\xb2" is "²", a digit to str.isdigit()
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nok", "invalid Content-Length"),
    (b"HTTP/1.1 2\xb20 OK\r\nContent-Length: 2\r\n\r\nok", "status line"),
    (b"HTTP/1.1 \xb9\xb9\xb9 OK\r\nContent-Length: 2\r\n\r\nok", "status line"),
    (b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok", "status line"),
    (b"HTTP/1.1 200 OK\r\nX-Rate: 1\rInjected: yes\r\nContent-Length: 2\r\n\r\nok", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nX-Rate: 1\x01\r\nContent-Length: 2\r\n\r\nok", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nX-Rate: 1\x00\r\nContent-Length: 2\r\n\r\nok", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nX Rate: 1\r\nContent-Length: 2\r\n\r\nok", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nX-Rate\x7f: 1\r\nContent-Length: 2\r\n\r\nok", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nok", "invalid Content-Length"),
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 0:\r\n\r\n", "invalid Content-Length"),  # even without a body
    (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T\x01: t\r\n\r\n", "trailer"),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\n0\r\n\r\n", "longer than its size"),
])
def test_malformed_or_cut_answers_are_protocol_errors(server, pool, answer, message):
    server.answer(answer, close=True)
    with pytest.raises(ProtocolError, match=message):
        post(pool)


def test_chunk_data_is_handed_over_before_its_line_end_arrives():
    # A stream's event must reach the client as soon as its bytes do, not when the next ones come.
    release = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as reader:
            while reader.readline() not in (b"\r\n", b""):
                pass
            conn.sendall(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst")
            release.wait(5)
            conn.sendall(b"\r\n0\r\n\r\n")

    threading.Thread(target=serve_once, daemon=True).start()
    pool = ConnectionPool("http", "127.0.0.1", listener.getsockname()[1])
    try:
        response = pool.request("POST", "/", b"", {}, connect_timeout=2, timeout=2)
        assert response.read_some(64) == b"first"  # would time out if the chunk's CRLF were awaited
        release.set()
        assert response.read_some(64) == b"" and response.done
        response.release()
    finally:
        release.set()
        pool.close()
        listener.close()


def test_read_timeout_is_a_timeout_error(server, pool):
    server.answer(OK_HEAD + b"Content-Length: 10\r\n\r\nslow")  # never sends the rest
    response = pool.request("POST", "/", b"", {}, connect_timeout=2, timeout=2)
    assert response.read_some(64) == b"slow"
    response.set_timeout(0.2)
    with pytest.raises(TimeoutError):
        response.read_some(64)
    response.close()


# Desync (issue 11, item 1): bytes beyond an answer must never become the next caller's answer.
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nsomeone's reply"


@pytest.mark.parametrize("answer", [
    OK_HEAD + b"Content-Length: 2\r\n\r\nok" + SMUGGLED,  # a Content-Length that under-counts
    b"HTTP/1.1 204 No Content\r\n\r\n" + SMUGGLED,  # a 204 with a body
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 15\r\n\r\n" + SMUGGLED[-15:] + SMUGGLED,
    OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + SMUGGLED,  # after the last chunk
])
def test_bytes_after_a_complete_answer_close_the_connection(server, pool, answer):
    server.answer(answer)
    server.answer(OK_HEAD + b"Content-Length: 4\r\n\r\nnext")
    post(pool)
    assert post(pool)[1] == b"next"
    assert server.connections == 2
    assert pool.idle_count == 1


def test_bytes_after_a_complete_answer_close_the_connection_over_tls(tmp_path):
    from tests.support.tls import make_test_ca

    ca = make_test_ca(tmp_path)
    tls_server = ScriptedServer(ssl_context=ca.server_context())
    tls_pool = ConnectionPool("https", "127.0.0.1", tls_server.port, ssl_context=ca.client_context())
    try:
        tls_server.answer(OK_HEAD + b"Content-Length: 2\r\n\r\nok" + SMUGGLED)
        tls_server.answer(OK_HEAD + b"Content-Length: 4\r\n\r\nnext")
        assert post(tls_pool)[1] == b"ok"
        assert post(tls_pool)[1] == b"next"
        assert tls_server.connections == 2
    finally:
        tls_pool.close()
        tls_server.close()


@pytest.mark.parametrize("answer", [
    OK_HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    OK_HEAD + b"Transfer-Encoding: gzip\r\n\r\nok",
    OK_HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
])
def test_ambiguous_framing_is_a_protocol_error(server, pool, answer):
    server.answer(answer, close=True)
    with pytest.raises(ProtocolError, match="Transfer-Encoding"):
        post(pool)
    assert pool.idle_count == 0


# One deadline for the whole exchange (item 6).
def test_endless_interim_answers_are_a_protocol_error(server, pool):
    server.answer(b"HTTP/1.1 100 Continue\r\n\r\n" * 1000 + OK_HEAD + b"Content-Length: 2\r\n\r\nok")
    with pytest.raises(ProtocolError, match="interim"):
        post(pool)


def test_an_endless_trailer_section_is_a_protocol_error(server, pool):
    server.answer(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n" + b"X-T: t\r\n" * 1000 + b"\r\n")
    with pytest.raises(ProtocolError, match="trailer"):
        post(pool)


def test_a_head_dripped_byte_by_byte_is_bounded_by_the_deadline(server, pool):
    # Every byte arrives well within the per-read timeout; the head as a whole does not.
    server.answer(OK_HEAD + b"X-Slow: " + b"s" * 400 + b"\r\nContent-Length: 2\r\n\r\nok", drip=0.01)
    with pytest.raises(TimeoutError):
        pool.request("POST", "/", b"", {}, connect_timeout=2, timeout=1, deadline=time.monotonic() + 0.3)


def test_a_body_dripped_byte_by_byte_is_bounded_by_the_deadline(server, pool):
    server.answer(OK_HEAD + b"Content-Length: 400\r\n\r\n" + b"x" * 400, drip=0.01)
    response = pool.request("POST", "/", b"", {}, connect_timeout=2, timeout=5)
    response.set_deadline(time.monotonic() + 0.3)
    with pytest.raises(TimeoutError):
        response.read(1000)
    response.close()


def test_the_head_is_bounded_by_the_timeout_when_no_deadline_is_given(server, pool):
    server.answer(OK_HEAD + b"X-Slow: " + b"s" * 400 + b"\r\nContent-Length: 2\r\n\r\nok", drip=0.01)
    with pytest.raises(TimeoutError):
        pool.request("POST", "/", b"", {}, connect_timeout=2, timeout=0.3)


def test_an_ip_address_is_connected_to_without_a_name_lookup(server, monkeypatch):
    """A name lookup costs a trip through gevent's resolver for every new connection: an address
    (OPA's 127.0.0.1 beside the enforcer) needs none, and connects while lookups fail."""

    def no_lookups(*args, **kwargs):
        raise socket.gaierror(socket.EAI_FAIL, "no name lookups here")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookups)
    server.answer(OK_HEAD + b"Content-Length: 2\r\n\r\nok")
    by_address = ConnectionPool("http", "127.0.0.1", server.port)
    by_name = ConnectionPool("http", "localhost", server.port)
    try:
        assert post(by_address)[1] == b"ok"
        with pytest.raises(ConnectError, match="no name lookups here"):
            post(by_name)
        with pytest.raises(ConnectError, match=r"cannot connect to 127\.0\.0\.1:\d+: Connection refused"):
            post(ConnectionPool("http", "127.0.0.1", free_port()))
    finally:
        by_address.close()
        by_name.close()
