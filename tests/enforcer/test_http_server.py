"""regate's gunicorn worker (enforcer.http_server) over real loopback TCP: what the app is given,
how answers are framed, and what is refused before any app code runs.

The server is `regate serve`'s gunicorn with its options (limits, hardening) and the worker class,
running tests/support/echo_wsgi.py, which answers with the WSGI environ and body it was given.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.net import free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
KEEPALIVE = 1


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.echo_wsgi", str(port), str(KEEPALIVE)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for_http(f"http://127.0.0.1:{port}/unread")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Shared:
    """Lets successive http.client responses read one connection's buffer (pipelined answers):
    a response closes its file when read to the end; this one stays open."""

    def __init__(self, file):
        self._file = file

    def makefile(self, mode):
        return self

    def __getattr__(self, name):
        return getattr(self._file, name)

    def close(self):
        pass


class Client:
    """Raw bytes out; answers read by http.client (which skips a 100 Continue)."""

    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> Client:
        self.sock.sendall(data)
        return self

    def answer(self, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        response = http.client.HTTPResponse(_Shared(self.file), method=method)
        response.begin()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()

    def echo(self, method: str = "GET") -> dict:
        status, _, body = self.answer(method)
        assert status == 200, body
        return json.loads(body)

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.file.close()
        self.sock.close()


@pytest.fixture
def client(server):
    c = Client(server)
    yield c
    c.close()


def test_what_the_app_is_given(client):
    doc = client.send(b"POST /v1/a%20b?x=1&y=%2F HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                      b"X-One: 1\r\nx-one: 2\r\nContent-Length: 5\r\n\r\nhello").echo()
    assert doc["method"] == "POST"
    assert doc["raw_uri"] == "/v1/a%20b?x=1&y=%2F"
    assert doc["path_info"] == "/v1/a b" and doc["query"] == "x=1&y=%2F"
    assert doc["protocol"] == "HTTP/1.1" and doc["script_name"] == ""
    assert doc["headers"] == {"HTTP_HOST": "h", "CONTENT_TYPE": "application/json", "HTTP_X_ONE": "1,2",
                              "CONTENT_LENGTH": "5"}
    assert doc["body"] == "hello"


def test_the_worker_freezes_what_it_loaded_before_serving(client):
    # Out of the collector's sight, the app and its modules cost a full collection nothing.
    status, _, body = client.send(b"GET /gc HTTP/1.1\r\nHost: h\r\n\r\n").answer()
    assert status == 200 and json.loads(body)["frozen"] > 10_000


@pytest.mark.parametrize("request_line", [b"GET  /p/?q=1 HTTP/1.1", b"GET /p/?q=1   HTTP/1.1"])
def test_repeated_spaces_in_the_request_line_read_as_one(client, request_line):
    # llhttp's reading, which RFC 9112 §3 allows (h11 refuses these): the same method, target and
    # version as with one space, so a proxy in front that accepts them reads the same request.
    doc = client.send(request_line + b"\r\nHost: h\r\n\r\n").echo()
    assert (doc["method"], doc["raw_uri"], doc["protocol"]) == ("GET", "/p/?q=1", "HTTP/1.1")


def test_underscored_header_names_are_dropped(client):
    """`X_Litellm_Team_Id` must not reach the app as HTTP_X_LITELLM_TEAM_ID (gunicorn drops them too)."""
    doc = client.send(b"GET / HTTP/1.1\r\nHost: h\r\nX_Litellm_Team_Id: t\r\nScript_Name: /v1\r\n\r\n").echo()
    assert doc["headers"] == {"HTTP_HOST": "h"} and doc["script_name"] == ""


def test_absolute_form_target(client):
    doc = client.send(b"GET http://example.test/v1/models?a=b HTTP/1.1\r\nHost: example.test\r\n\r\n").echo()
    assert doc["path_info"] == "/v1/models" and doc["query"] == "a=b"
    assert doc["raw_uri"] == "http://example.test/v1/models?a=b"


def test_chunked_body_with_extensions_and_trailers(client):
    doc = client.send(b"POST /e HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n").echo()
    assert doc["body"] == "abcde" and "HTTP_X_TRAILER" not in doc["headers"]
    assert "CONTENT_LENGTH" not in doc["headers"]


def test_a_body_sent_in_pieces(client):
    client.send(b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nab")
    time.sleep(0.05)
    client.send(b"cd")
    time.sleep(0.05)
    assert client.send(b"ef").echo()["body"] == "abcdef"


def test_expect_100_continue_is_answered_when_the_app_reads(client):
    client.send(b"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert client.file.readline() == b"HTTP/1.1 100 Continue\r\n" and client.file.readline() == b"\r\n"
    assert client.send(b"xyz").echo()["body"] == "xyz"


def test_pipelined_requests_are_answered_in_order(client):
    client.send(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz"
                b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [client.echo()["path_info"] for _ in range(3)] == ["/1", "/2", "/3"]


def test_keep_alive_then_idle_close(client):
    for i in range(3):
        assert client.send(f"GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode()).echo()["path_info"] == f"/{i}"
    started = time.monotonic()
    assert client.closed_by_server()  # after `keepalive` idle seconds
    assert KEEPALIVE - 0.2 < time.monotonic() - started < KEEPALIVE + 3


@pytest.mark.parametrize(("request_bytes", "keeps"), [
    (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True),
])
def test_connection_persistence(client, request_bytes, keeps):
    status, headers, _ = client.send(request_bytes).answer()
    assert status == 200
    assert (headers.get("connection") != "close") is keeps
    if not keeps:
        assert client.closed_by_server()


def test_a_stream_is_chunked_on_http11(client):
    """One chunk per item the app yields (an SSE event reaches the client when the app has it)."""
    client.send(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        data += client.sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert body == b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
    assert client.send(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n").echo()["path_info"] == "/after"


def test_a_stream_ends_with_the_connection_on_http10(client):
    status, headers, body = client.send(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").answer()
    assert status == 200 and "transfer-encoding" not in headers and headers["connection"] == "close"
    assert body == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"


def test_head_and_204_have_no_body(client):
    status, headers, body = client.send(b"HEAD /unread HTTP/1.1\r\nHost: h\r\n\r\n").answer("HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == "15"
    status, headers, body = client.send(b"GET /no-content HTTP/1.1\r\nHost: h\r\n\r\n").answer()
    assert status == 204 and body == b"" and "content-length" not in headers
    assert client.send(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n").echo()["path_info"] == "/after"


def test_an_unread_body_closes_the_connection(client):
    """Skipping a body the app never read would let its bytes be parsed as the next request."""
    client.send(b"POST /unread HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + b"G" * 1000)
    status, headers, _ = client.answer()
    assert status == 200 and headers["connection"] == "close"


def test_an_app_error_is_500_and_closes(client):
    status, headers, body = client.send(b"GET /error HTTP/1.1\r\nHost: h\r\n\r\n").answer()
    assert status == 500 and json.loads(body)["error"]["code"] == "500"
    assert client.closed_by_server()


def test_a_short_answer_closes_the_connection(client):
    """Fewer bytes than the announced Content-Length: only closing tells the client where it ends."""
    client.send(b"GET /short HTTP/1.1\r\nHost: h\r\n\r\n")
    data = b""
    while chunk := client.sock.recv(65536):
        data += chunk
    assert data.endswith(b"\r\n\r\n12345")


def test_a_body_cut_off_is_a_client_error(client):
    client.send(b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    client.sock.shutdown(socket.SHUT_WR)
    data = client.sock.recv(65536)
    assert data == b"" or data.startswith(b"HTTP/1.1 400 ")


LONG = b"a" * 5000


@pytest.mark.parametrize(("request_bytes", "status", "message"), [
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, "Transfer-Encoding can't be present with Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", 400, "Content-Length can't be present with Transfer-Encoding"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "Duplicate Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", 400, "Invalid character in Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400, "`Transfer-Encoding`"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc", 400, "`Transfer-Encoding`"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n", 400, "malformed request"),
    (b"GET / HTTP/1.1\nHost: h\n\n", 400, "malformed request"),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400, "Invalid header token"),
    (b"GET /a\x00b HTTP/1.1\r\nHost: h\r\n\r\n", 400, "malformed request"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400, "malformed request"),
    (b"GET / HTTP/2.0\r\n\r\n", 505, "HTTP/2.0 is not supported"),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "malformed request"),
    (b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 400, "the request target is not a path"),
    (b"GET / HTTP/1.1\r\n\r\n", 400, "needs a Host header"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host header"),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, "the request target is too long"),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431, "too many header fields"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 16_400 + b"\r\n\r\n", 431, "a request header field is too large"),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: %b\r\n" % (i, LONG) for i in range(14)) + b"\r\n", 431, "the request head is too large"),
])
def test_refused_before_the_app(client, request_bytes, status, message):
    got, headers, body = client.send(request_bytes).answer()
    assert got == status and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == str(status) and message in error["message"], error
    assert client.closed_by_server()


def test_a_field_at_the_limit_is_served(client):
    """`regate serve` lets a 16 KiB field through (an oversized token gets the app's own 401)."""
    value = b"a" * (16_384 - len(b"X-Big"))
    doc = client.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + value + b"\r\n\r\n").echo()
    assert doc["headers"]["HTTP_X_BIG"] == value.decode()


def test_a_slow_head_is_dropped_after_the_keepalive_time(server):
    c = Client(server, timeout=10)
    try:
        c.send(b"GET / HTTP/1.1\r\nHo")
        started = time.monotonic()
        data = c.sock.recv(65536)
        assert data == b"" or data.startswith(b"HTTP/1.1 400")
        assert time.monotonic() - started < KEEPALIVE + 3
    finally:
        c.close()


def test_many_connections_at_once(server):
    clients = [Client(server) for _ in range(50)]
    try:
        for i, c in enumerate(clients):
            c.send(f"GET /slow?0.2 HTTP/1.1\r\nHost: h\r\nX-N: {i}\r\n\r\n".encode())
        started = time.monotonic()
        assert [c.echo()["headers"]["HTTP_X_N"] for c in clients] == [str(i) for i in range(50)]
        assert time.monotonic() - started < 5  # concurrent (greenlets), not 50 × 0.2 s in a row
    finally:
        for c in clients:
            c.close()
