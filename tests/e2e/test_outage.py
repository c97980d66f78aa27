"""Failing closed when the policy engine cannot decide: OPA stopped, slow, or answering something
that is not a well-formed decision. Every case is a 503 in the OpenAI shape, nothing reaches the
upstream, the probes tell the truth (readiness 503, liveness 200), and the enforcer recovers once
the real OPA is back on its port.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.support.net import QuietHandler, wait_for_http

from .conftest import MASTER_KEY, assert_openai_error, chat_body, parse_metrics, sample_name, team_token


def reason(headers) -> str | None:
    return headers.get("X-Regate-Reason")


class FakeOpa:
    """A stand-in on the real OPA's port: decisions get `answer` (status, body bytes), health checks
    200, state reads and writes 500; with `hang` nothing is answered until the stand-in stops."""

    def __init__(self, port: int):
        self.port = port
        self.answer: tuple[int, bytes] = (200, b"{}")
        self.hang = False
        self.decisions = 0
        self._release = threading.Event()
        self._connections = []
        fake = self

        class Handler(QuietHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path.startswith("/v1/data/regate/authz/decision"):
                    fake.decisions += 1
                if fake.hang:
                    fake._release.wait(30)
                    self.close_connection = True  # leave without an answer
                    return
                if self.path.startswith("/v1/data/regate/authz/decision"):
                    self.send_bytes(*fake.answer)
                elif self.path.startswith("/health"):
                    self.send_bytes(200, b"{}")
                else:
                    self.send_bytes(500, b'{"code": "internal_error"}')

            do_GET = do_POST = do_PUT = do_PATCH = _reply  # noqa: N815

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def process_request(self, request, client_address):
                fake._connections.append(request)
                super().process_request(request, client_address)

        self._httpd = Server(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> "FakeOpa":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()  # hanging handlers close their connections
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
        # Its handler threads would go on answering the enforcer's pooled keep-alive connections
        # (state writes: 500) after the real OPA is back on the port: the stand-in leaves entirely.
        for conn in self._connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def opa_replaced(opa, enforcer):
    """Stop the module's OPA and put a FakeOpa on its port; afterwards the real OPA comes back."""
    opa.stop()
    try:
        with FakeOpa(opa.port) as fake:
            yield fake
    finally:
        opa.start()
        wait_ready(enforcer)


def wait_ready(enforcer, timeout: float = 45.0) -> None:
    """Until readiness is 200 again (OPA has its bundle and the blocked-team state is re-loaded)."""
    url = enforcer.url
    try:
        wait_for_http(f"{url}/health/readiness", timeout=timeout)
    except TimeoutError as e:
        try:  # which check is still failing, and what the enforcer logged, for the report
            urllib.request.urlopen(f"{url}/health/readiness", timeout=5)
        except urllib.error.HTTPError as answer:
            logged = [line for line in enforcer.output.splitlines() if '"path"' not in line][-40:]
            raise TimeoutError(f"{e}: {answer.read()[:300]!r}\n" + "\n".join(logged)) from None
        raise


def assert_fails_closed(client, idp, upstream, *, codes: tuple[str, ...]) -> list[str]:
    """Team chat, admin management and master-key calls are all 503; nothing goes upstream."""
    messages = []
    calls = [
        ("POST", "/v1/chat/completions", team_token(idp), chat_body()),
        ("POST", "/v1/chat/completions", MASTER_KEY, chat_body()),
        ("POST", "/key/generate", idp.mint({"scope": "litellm_proxy_admin"}), {"user_id": "u-outage"}),
        ("GET", "/v1/models", team_token(idp), None),
    ]
    for method, path, token, body in calls:
        status, answer, headers = client.request(method, path, token=token, json_body=body)
        assert status == 503, (path, answer)
        messages.append(assert_openai_error(answer, 503))
        assert answer["error"]["type"] == "service_unavailable"
        assert reason(headers) in codes, (path, reason(headers))
    assert upstream.requests == []
    return messages


def test_opa_stopped_fails_closed_then_recovers(client, idp, opa, enforcer, fresh_upstream):
    token = team_token(idp, team="team-outage")
    assert client.post("/v1/chat/completions", chat_body(), token=token)[0] == 200
    fresh_upstream.clear()

    errors = sample_name("regate_decisions_total", result="error", reason="decision_unavailable")
    errors_before = parse_metrics(client.get("/metrics")[1]).get(errors, 0.0)
    opa.stop()
    try:
        messages = assert_fails_closed(client, idp, fresh_upstream, codes=("decision_unavailable",))
        assert parse_metrics(client.get("/metrics")[1])[errors] == errors_before + 4
        assert set(messages) == {"the policy engine is unreachable"}
        status, body, _ = client.get("/health/readiness")
        assert status == 503 and body["checks"]["opa"] == "unavailable", body
        status, body, _ = client.get("/health/liveliness")
        assert (status, body) == (200, {"status": "ok"})
        assert client.get("/metrics")[0] == 200
    finally:
        opa.start()  # the same port: the enforcer's OPA URL does not change

    deadline = time.monotonic() + 20
    while True:  # the blocked-team state is re-loaded into the fresh OPA within a poll or two
        status, body, headers = client.post("/v1/chat/completions", chat_body(), token=token)
        if status == 200 or time.monotonic() > deadline:
            break
        assert status == 503, body  # fail closed while it catches up, never anything else
        time.sleep(0.1)
    assert status == 200, body
    assert fresh_upstream.last_request.path == "/v1/chat/completions"
    wait_ready(enforcer)
    assert client.get("/health/readiness")[0] == 200


def test_slow_opa_is_503_within_the_timeout(client, idp, opa_replaced, fresh_upstream):
    """A policy engine that accepts the connection and never answers: 503 after the bounded
    decision timeout (1 s, REGATE_OPA_TIMEOUT), not a hang and never an allow."""
    opa_replaced.hang = True
    started = time.monotonic()
    status, body, headers = client.post("/v1/chat/completions", chat_body(), token=team_token(idp))
    elapsed = time.monotonic() - started
    assert status == 503 and reason(headers) == "decision_timeout", body
    assert assert_openai_error(body, 503) == "the policy engine did not answer in time"
    assert elapsed < 5, f"answered after {elapsed:.1f}s"
    assert opa_replaced.decisions >= 1
    assert fresh_upstream.requests == []


MALFORMED = {
    "undefined (empty object)": (200, b"{}"),
    "undefined (null result)": (200, b'{"result": null}'),
    "result true": (200, b'{"result": true}'),
    "result list": (200, b'{"result": [{"allow": true}]}'),
    "allow only": (200, b'{"result": {"allow": true}}'),
    "allow as string": (200, json.dumps({"result": {
        "allow": "true", "status": 200, "reasons": [], "message": "allowed", "role": "team",
        "subject": {}, "upsert_user": False}}).encode()),
    "allow as 1": (200, json.dumps({"result": {
        "allow": 1, "status": 200, "reasons": [], "message": "allowed", "role": "team",
        "subject": {}, "upsert_user": False}}).encode()),
    "allow with deny reasons": (200, json.dumps({"result": {
        "allow": True, "status": 403, "reasons": ["team_blocked"], "message": "x", "role": "team",
        "subject": {}, "upsert_user": False}}).encode()),
    "allow without subject": (200, json.dumps({"result": {
        "allow": True, "status": 200, "reasons": [], "message": "allowed", "role": "team",
        "upsert_user": False}}).encode()),
    "deny without reason": (200, json.dumps({"result": {
        "allow": False, "status": 403, "reasons": [], "message": "no", "role": "team",
        "subject": {}, "upsert_user": False}}).encode()),
    "not json": (200, b"<html>allow</html>"),
    "empty body": (200, b""),
    "opa error": (500, b'{"code": "internal_error", "message": "eval_conflict_error"}'),
    "bad request": (400, b'{"code": "invalid_parameter"}'),
}


def test_undefined_or_malformed_decisions_are_503(client, idp, opa_replaced, fresh_upstream):
    wrong = []
    for name, answer in MALFORMED.items():
        opa_replaced.answer = answer
        before = opa_replaced.decisions
        status, body, headers = client.post("/v1/chat/completions", chat_body(), token=team_token(idp))
        if status != 503 or opa_replaced.decisions != before + 1 or reason(headers) not in (
                "decision_undefined", "decision_malformed", "decision_unavailable"):
            wrong.append((name, status, reason(headers), body))
            continue
        assert_openai_error(body, 503)
    assert wrong == []
    assert fresh_upstream.requests == []
