"""enforcer.upstreams against the OpenAI stand-in over real HTTP on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from regate.common.errors import BadRequestError, RegateError, UnknownModelError, UpstreamError
from regate.compiler.model import Deployment
from regate.enforcer.upstreams import FORWARDED_CLIENT_HEADERS, Upstreams
from tests.support.mock_openai import Behavior, MockOpenAI
from tests.support.net import free_port, wait_for_http
from tests.support.scripted_server import ScriptedServer
from tests.support.tls import make_test_ca

UPSTREAM_KEY = "sk-upstream-0123456789abcdef"
AZURE_KEY = "azure-key-0123456789abcdef"

CHAT = {"model": "gpt-4o", "messages": [{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": "hello there friend"}], "max_tokens": 4}
BODIES = {
    "chat": CHAT,
    "completions": {"model": "gpt-4o", "prompt": "once upon a time", "max_tokens": 6},
    "embeddings": {"model": "gpt-4o", "input": ["one two", "three"]},
}
# (prompt_tokens, completion_tokens) the stand-in reports for BODIES: words, max_tokens.
USAGE = {"chat": (5, 4), "completions": (4, 6), "embeddings": (3, 0)}

# What a client might send: none of it but the allow-listed headers may reach the upstream.
CLIENT_HEADERS = {
    "Authorization": "Bearer client-jwt.payload.sig",
    "api-key": "client-azure-key",
    "X-Api-Key": "client-x-api-key",
    "Cookie": "session=client-cookie",
    "Connection": "close",
    "Keep-Alive": "timeout=5",
    "TE": "trailers",
    "Trailer": "X-Foo",
    "Transfer-Encoding": "chunked",
    "Upgrade": "h2c",
    "Proxy-Authorization": "Basic Y2xpZW50OnB3",
    "Proxy-Connection": "keep-alive",
    "Host": "evil.example",
    "Content-Length": "999",
    "OpenAI-Organization": "org-client-chosen",
    "OpenAI-Project": "proj-client-chosen",
    "X-Request-ID": "client-chosen-id",
    "OpenAI-Beta": "assistants=v2",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "X-Evil": "ok\r\nInjected: yes",
}
DROPPED = {"api-key", "x-api-key", "cookie", "connection", "keep-alive", "te", "trailer",
           "transfer-encoding", "upgrade", "proxy-authorization", "proxy-connection", "openai-organization",
           "openai-project", "x-evil", "injected"}


@pytest.fixture
def mock():
    with MockOpenAI(api_key=UPSTREAM_KEY) as server:
        yield server


def openai_upstreams(mock: MockOpenAI, **kw) -> Upstreams:
    deployment = Deployment("gpt-4o", "openai", "gpt-4o-2024-08-06", api_base=mock.openai_base, api_key=UPSTREAM_KEY,
                            **kw)
    return Upstreams([deployment], environ={})


def azure_upstreams(mock: MockOpenAI, **kw) -> Upstreams:
    deployment = Deployment("gpt-4o", "azure", "prod-gpt4o", api_base=mock.url + "/", api_key=AZURE_KEY,
                            api_version="2024-10-21", **kw)
    return Upstreams([deployment], environ={})


def stream_body(max_tokens: int = 5, **extra) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "tell me a story"}],
            "max_tokens": max_tokens, "stream": True, **extra}


# JSON answers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["chat", "completions", "embeddings"])
def test_openai_request_reaches_upstream_as_built_and_answer_comes_back(mock, kind):
    upstreams = openai_upstreams(mock)
    body = json.loads(json.dumps(BODIES[kind]))
    with upstreams.open(kind, body, request_id="req-123", extra_headers=CLIENT_HEADERS) as call:
        assert (call.status, call.ok, call.is_stream) == (200, True, False)
        answer = call.read_json()
        assert call.usage == USAGE[kind]

    got = mock.last_request
    path = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}[kind]
    assert (got.method, got.path, got.query) == ("POST", path, {})
    assert got.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert got.headers["x-request-id"] == "req-123"
    assert got.headers["host"] == f"127.0.0.1:{mock.port}"
    assert got.headers["content-length"] == str(len(got.raw_body))
    assert got.headers["content-type"] == "application/json"
    assert got.headers["openai-beta"] == "assistants=v2"
    assert got.headers["traceparent"] == CLIENT_HEADERS["traceparent"]
    assert not DROPPED & got.header_names
    assert "client" not in json.dumps(got.headers)  # no client credential under any name
    assert got.body == {**BODIES[kind], "model": "gpt-4o-2024-08-06"}
    assert body == BODIES[kind], "the caller's body must not be modified"
    assert answer == json.loads(got.response_body)


def test_response_headers_are_filtered(mock):
    upstreams = openai_upstreams(mock)
    with upstreams.open("chat", CHAT, request_id="r") as call:
        call.read_json()
    names = {name.lower() for name in call.headers}
    assert call.headers["Content-Type"] == "application/json"
    assert "x-ratelimit-remaining-requests" in names
    assert not names & {"set-cookie", "openai-organization", "x-request-id", "content-length", "transfer-encoding",
                        "connection", "server", "date"}


@pytest.mark.parametrize("kind", ["chat", "completions", "embeddings"])
def test_azure_request_uses_deployment_path_api_version_and_api_key(mock, kind):
    mock.api_key = AZURE_KEY
    upstreams = azure_upstreams(mock)
    with upstreams.open(kind, BODIES[kind], request_id="req-az", extra_headers=CLIENT_HEADERS) as call:
        assert call.status == 200
        answer = call.read_json()
        assert call.usage == USAGE[kind]

    got = mock.last_request
    route = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}[kind]
    assert got.path == f"/openai/deployments/prod-gpt4o/{route}"
    assert got.query == {"api-version": ["2024-10-21"]}
    assert got.headers["api-key"] == AZURE_KEY
    assert "authorization" not in got.headers
    assert got.headers["x-request-id"] == "req-az"
    assert not (DROPPED - {"api-key"}) & got.header_names and "authorization" not in got.headers
    expected = dict(BODIES[kind])
    del expected["model"]  # the deployment in the path chooses the model
    assert got.body == expected
    assert answer["model"] == "prod-gpt4o"


def test_connections_are_kept_alive_and_reused(mock):
    upstreams = openai_upstreams(mock)
    for _ in range(3):
        with upstreams.open("chat", CHAT, request_id="r") as call:
            call.read_json()
    peers = {r.peer for r in mock.requests}
    assert len(mock.requests) == 3 and len(peers) == 1


# routing -----------------------------------------------------------------------------------------
def test_round_robin_over_entries_with_the_same_name(mock):
    deployments = [Deployment("pool", "openai", f"upstream-{i}", api_base=mock.openai_base, api_key=UPSTREAM_KEY)
                   for i in "abc"]
    deployments.append(Deployment("other", "openai", "other-upstream", api_base=mock.openai_base, api_key=UPSTREAM_KEY))
    upstreams = Upstreams(deployments, environ={})
    assert upstreams.model_names() == ["other", "pool"]
    chosen = []
    for _ in range(7):
        with upstreams.open("chat", {**CHAT, "model": "pool"}, request_id="r") as call:
            chosen.append(call.deployment.upstream_model)
            call.read_json()
    sent = [r.body["model"] for r in mock.requests]
    assert sent == chosen == ["upstream-a", "upstream-b", "upstream-c"] * 2 + ["upstream-a"]


@pytest.mark.parametrize("model", ["gpt-5-unknown", None, "", 42])
def test_unknown_or_missing_model_is_400_and_nothing_is_sent(mock, model):
    upstreams = openai_upstreams(mock)
    body = {**CHAT, "model": model} if model is not None else {"messages": CHAT["messages"]}
    with pytest.raises(UnknownModelError) as err:
        upstreams.open("chat", body, request_id="r")
    assert (err.value.status, err.value.code) == (400, "unknown_model")
    if model == "gpt-5-unknown":
        assert "'gpt-5-unknown' is not served" in str(err.value)
    else:
        assert "must name a `model`" in str(err.value)
    assert mock.requests == []


def test_unsupported_provider_is_501():
    upstreams = Upstreams([Deployment("claude", "anthropic", "claude-3-5-sonnet", api_key="os.environ/UNSET")],
                          environ={})
    assert upstreams.model_names() == ["claude"]
    with pytest.raises(RegateError) as err:
        upstreams.open("chat", {**CHAT, "model": "claude"}, request_id="r")
    assert (err.value.status, err.value.code) == (501, "provider_not_supported")
    assert "anthropic" in str(err.value)


# configuration ---------------------------------------------------------------------------------------
def test_environment_references_are_resolved(mock):
    environ = {"MOCK_BASE": mock.openai_base, "MOCK_KEY": UPSTREAM_KEY}
    upstreams = Upstreams([Deployment("gpt-4o", "openai", "gpt-4o-mini", api_base="os.environ/MOCK_BASE",
                                      api_key="os.environ/MOCK_KEY")], environ=environ)
    with upstreams.open("chat", CHAT, request_id="r") as call:
        assert call.status == 200
        call.read_json()
    assert mock.last_request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_azure_settings_fall_back_to_litellm_environment_variables(mock):
    mock.api_key = AZURE_KEY
    environ = {"AZURE_API_BASE": mock.url, "AZURE_API_KEY": AZURE_KEY, "AZURE_API_VERSION": "2024-06-01"}
    upstreams = Upstreams([Deployment("gpt-4o", "azure", "dep1")], environ=environ)
    with upstreams.open("chat", CHAT, request_id="r") as call:
        assert call.status == 200
        call.read_json()
    assert mock.last_request.query == {"api-version": ["2024-06-01"]}
    assert mock.last_request.headers["api-key"] == AZURE_KEY


def test_missing_environment_variable_names_model_and_variable_but_no_value():
    environ = {"PRESENT_BASE": "https://secret-host-value.example/v1", "OTHER": "sk-other-secret-value"}
    deployment = Deployment("gpt-4o", "openai", "gpt-4o", api_base="os.environ/PRESENT_BASE",
                            api_key="os.environ/MISSING_KEY")
    with pytest.raises(RegateError) as err:
        Upstreams([deployment], environ=environ)
    message = str(err.value)
    assert err.value.code == "missing_env"
    assert "'gpt-4o'" in message and "MISSING_KEY" in message and "api_key" in message
    assert "secret-host-value" not in message and "sk-other-secret-value" not in message


@pytest.mark.parametrize("api_base", ["ftp://host/v1", "https://user:pw@host/v1", "https://host/v1?x=1", "not a url",
                                      "http://host:notaport/v1"])
def test_invalid_api_base_is_refused_at_start(api_base):
    with pytest.raises(RegateError) as err:
        Upstreams([Deployment("m", "openai", "m", api_base=api_base, api_key="k")], environ={})
    assert err.value.code == "invalid_api_base"
    assert "pw" not in str(err.value)


def test_default_openai_base_needs_a_key():
    with pytest.raises(RegateError) as err:
        Upstreams([Deployment("m", "openai", "gpt-4o")], environ={})
    assert err.value.code == "missing_api_key"
    assert Upstreams([Deployment("m", "openai", "gpt-4o")], environ={"OPENAI_API_KEY": "sk-x"}).model_names() == ["m"]


# streaming -----------------------------------------------------------------------------------------------
def test_stream_chunks_pass_through_as_they_arrive_and_usage_is_captured(mock):
    hold = threading.Event()
    mock.push(Behavior(hold=hold))
    upstreams = openai_upstreams(mock)
    body = stream_body(max_tokens=5, stream_options={"include_obfuscation": False})
    with upstreams.open("chat", body, request_id="r-stream") as call:
        assert (call.status, call.is_stream) == (200, True)
        assert call.headers["Content-Type"].startswith("text/event-stream")
        assert (call.headers["Cache-Control"], call.headers["X-Accel-Buffering"]) == ("no-cache", "no")
        assert not {name.lower() for name in call.headers} & {"set-cookie", "transfer-encoding", "connection"}
        chunks = call.iter_chunks()
        first = next(chunks)
        # The stand-in is still holding the rest of the answer: the first chunk came through alone.
        assert not hold.is_set() and mock.streams_completed == 0
        assert first.startswith(b"data: {") and call.usage is None
        hold.set()
        received = first + b"".join(chunks)
    assert mock.streams_completed == 1
    got = mock.last_request
    assert received == got.response_body, "the stream must pass through byte for byte"
    assert received.endswith(b"data: [DONE]\n\n")
    assert got.body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert body["stream_options"] == {"include_obfuscation": False}
    assert call.usage == (4, 5)


def test_include_usage_is_forced_on_for_completions_streams(mock):
    upstreams = openai_upstreams(mock)
    body = {"model": "gpt-4o", "prompt": "a b", "max_tokens": 2, "stream": True,
            "stream_options": {"include_usage": False}}
    with upstreams.open("completions", body, request_id="r") as call:
        data = b"".join(call.iter_chunks())
    assert mock.last_request.body["stream_options"] == {"include_usage": True}
    assert b'"object":"text_completion"' in data
    assert call.usage == (2, 2)


def test_azure_stream_captures_usage(mock):
    mock.api_key = AZURE_KEY
    upstreams = azure_upstreams(mock)
    with upstreams.open("chat", stream_body(max_tokens=3), request_id="r") as call:
        data = b"".join(call.iter_chunks())
    assert mock.last_request.body["stream_options"] == {"include_usage": True}
    assert data == mock.last_request.response_body
    assert call.usage == (4, 3)


def test_close_delimited_stream_in_many_small_reads(mock):
    mock.push(Behavior(framing="close", chunk_delay=0.002))
    upstreams = openai_upstreams(mock)
    with upstreams.open("chat", stream_body(max_tokens=20), request_id="r") as call:
        chunks = list(call.iter_chunks())
    assert len(chunks) > 5
    assert b"".join(chunks) == mock.last_request.response_body
    assert call.usage == (4, 20)


def test_client_closing_mid_stream_closes_the_upstream_connection(mock):
    hold = threading.Event()
    mock.push(Behavior(hold=hold, chunk_delay=0.005))
    upstreams = openai_upstreams(mock)
    call = upstreams.open("chat", stream_body(max_tokens=200), request_id="r")
    chunks = call.iter_chunks()
    next(chunks)
    chunks.close()  # what the WSGI server does when the client goes away
    hold.set()
    assert mock.disconnected.wait(5), "the upstream never noticed the closed connection"
    assert mock.streams_completed == 0 and not mock.last_request.completed
    # The half-read connection was not returned to the pool: the next call works on a fresh one.
    with upstreams.open("chat", CHAT, request_id="r2") as again:
        assert again.status == 200 and again.read_json()["usage"]["completion_tokens"] == 4
    first, second = mock.requests
    assert first.peer != second.peer


def test_upstream_dropping_mid_stream_raises_502(mock):
    mock.push(Behavior(drop_after_chunks=3))
    upstreams = openai_upstreams(mock)
    received = []
    with upstreams.open("chat", stream_body(max_tokens=10), request_id="r") as call:
        with pytest.raises(UpstreamError) as err:
            for chunk in call.iter_chunks():
                received.append(chunk)
    assert (err.value.status, err.value.code) == (502, "upstream_connection_lost")
    assert b"".join(received) == mock.last_request.response_body
    assert call.usage is None



def test_a_drain_in_the_background_renews_as_it_reads_then_records(mock):
    from regate.enforcer.stream_drains import StreamDrains

    drains, renewed, recorded = StreamDrains(), [], []
    call = openai_upstreams(mock).open("chat", stream_body(max_tokens=40), request_id="r")
    call.read_chunk()
    drains.start(call, lambda: recorded.append(call.usage), lambda: renewed.append(call.events))
    deadline = time.monotonic() + 10
    while not recorded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorded == [(4, 40)] and renewed and renewed[-1] == call.events


# after the client left (issue 11, item 4) --------------------------------------------------------------------
def test_drain_reads_on_to_the_usage(mock):
    with openai_upstreams(mock).open("chat", stream_body(max_tokens=40), request_id="r") as call:
        call.read_chunk()
        call.drain(max_bytes=1 << 20)
    # Read on to the usage, the stream's last data event; not to the stand-in's `[DONE]`, which
    # races with the close (asserting the stand-in completed its answer failed once in CI).
    assert call.usage == (4, 40)


def test_drain_runs_its_callback_after_each_chunk(mock):
    """The proxy renews the request's rate-limit lease from it while the upstream works on."""
    seen = []
    with openai_upstreams(mock).open("chat", stream_body(max_tokens=40), request_id="r") as call:
        call.read_chunk()
        call.drain(max_bytes=1 << 20, on_chunk=lambda: seen.append(call.events))
    assert len(seen) > 1 and seen == sorted(seen) and seen[-1] == call.events


def test_drain_stops_at_the_byte_cap(mock):
    with openai_upstreams(mock).open("chat", stream_body(max_tokens=5000), request_id="r") as call:
        call.read_chunk()
        call.drain(max_bytes=20_000)
        assert call.usage is None and 20_000 / 300 < call.events < 5000
    assert mock.disconnected.wait(5), "the upstream connection was not closed"


def test_drain_gives_up_after_one_stream_wait(mock):
    stall = threading.Event()
    mock.push(Behavior(holds={3: stall}))
    try:
        with openai_upstreams(mock, stream_timeout=0.3).open("chat", stream_body(), request_id="r") as call:
            call.read_chunk()
            call.drain(max_bytes=1 << 20)
            assert call.usage is None and call.events == 3
    finally:
        stall.set()


# errors -----------------------------------------------------------------------------------------------------
def test_upstream_error_status_and_body_pass_through(mock):
    behavior = Behavior.fail(429, "Rate limit reached for gpt-4o", type="requests", code="rate_limit_exceeded",
                             extra_headers={"Retry-After": "7"})
    mock.push(behavior)
    upstreams = openai_upstreams(mock)
    with upstreams.open("chat", CHAT, request_id="r") as call:
        assert (call.status, call.upstream_status, call.ok, call.error_code) == (429, 429, False, "upstream_status")
        assert call.read_json() == behavior.error
        assert call.headers["Retry-After"] == "7"
        assert call.usage is None


def test_streamed_request_that_fails_answers_json(mock):
    mock.push(Behavior.fail(400, "This model's maximum context length is 128000 tokens.",
                            code="context_length_exceeded", param="messages"))
    upstreams = openai_upstreams(mock)
    with upstreams.open("chat", stream_body(), request_id="r") as call:
        assert (call.status, call.is_stream) == (400, False)
        assert call.read_json()["error"]["code"] == "context_length_exceeded"


def test_upstream_auth_failure_is_502_with_the_upstream_message_and_no_key(mock):
    wrong = "sk-wrong-key-0123456789"
    upstreams = Upstreams([Deployment("gpt-4o", "openai", "gpt-4o", api_base=mock.openai_base, api_key=wrong)],
                          environ={})
    with upstreams.open("chat", CHAT, request_id="r") as call:
        assert (call.status, call.upstream_status, call.error_code) == (502, 401, "upstream_auth_failed")
        error = call.read_json()["error"]
    upstream_message = json.loads(mock.last_request.response_body)["error"]["message"]
    assert wrong[-4:] in upstream_message, "the stand-in echoes a masked key as OpenAI does"
    assert "Incorrect API key provided" in error["message"]
    assert wrong not in error["message"] and wrong[-4:] not in error["message"]
    assert error["code"] == "502" and error["type"] == "upstream_auth_failed"


def test_azure_auth_failure_is_502(mock):
    mock.api_key = "another-key"
    upstreams = azure_upstreams(mock)
    with upstreams.open("embeddings", BODIES["embeddings"], request_id="r") as call:
        assert (call.status, call.upstream_status) == (502, 401)
        assert "Access denied" in call.read_json()["error"]["message"]


def test_non_json_error_gets_an_openai_shaped_body(mock):
    mock.push(Behavior(status=503, raw_body=b"<html>upstream overloaded</html>", content_type="text/html"))
    upstreams = openai_upstreams(mock)
    with upstreams.open("chat", CHAT, request_id="r") as call:
        assert call.status == 503 and call.headers["Content-Type"] == "application/json"
        error = call.read_json()["error"]
    assert error["message"] == "the upstream for model 'gpt-4o' answered HTTP 503"
    assert error["code"] == "503"


def test_redirect_is_not_followed(mock):
    mock.push(Behavior(status=307, raw_body=b"", extra_headers={"Location": mock.openai_base + "/steal"}))
    upstreams = openai_upstreams(mock)
    with upstreams.open("chat", CHAT, request_id="r") as call:
        assert (call.status, call.error_code) == (502, "upstream_redirect")
        assert "redirect" in call.read_json()["error"]["message"]
    assert [r.path for r in mock.requests] == ["/v1/chat/completions"]


def test_non_json_success_body_is_502(mock):
    mock.push(Behavior(raw_body=b"not json", content_type="text/plain"))
    upstreams = openai_upstreams(mock)
    with upstreams.open("chat", CHAT, request_id="r") as call:
        with pytest.raises(UpstreamError) as err:
            call.read_json()
    assert (err.value.status, err.value.code) == (502, "upstream_bad_response")


def test_connection_refused_is_502():
    port = free_port()
    upstreams = Upstreams([Deployment("gpt-4o", "openai", "gpt-4o", api_base=f"http://127.0.0.1:{port}/v1",
                                      api_key=UPSTREAM_KEY)], environ={})
    with pytest.raises(UpstreamError) as err:
        upstreams.open("chat", CHAT, request_id="r")
    assert (err.value.status, err.value.code) == (502, "upstream_unreachable")
    assert UPSTREAM_KEY not in str(err.value) and str(port) not in str(err.value)


def test_upstream_closing_without_answer_is_502(mock):
    mock.push(Behavior(drop_before_response=True))
    upstreams = openai_upstreams(mock)
    with pytest.raises(UpstreamError) as err:
        upstreams.open("chat", CHAT, request_id="r")
    assert err.value.status == 502


def test_slow_headers_time_out_with_504_within_the_bound(mock):
    mock.push(Behavior(headers_delay=5))
    upstreams = openai_upstreams(mock, timeout=0.4)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        upstreams.open("chat", CHAT, request_id="r")
    elapsed = time.monotonic() - started
    assert (err.value.status, err.value.code) == (504, "upstream_timeout")
    assert 0.3 < elapsed < 2.0


def test_trickling_body_is_bounded_by_the_whole_call_timeout(mock):
    # Every gap (0.25 s) is shorter than the timeout, the whole answer (1 s) is not.
    mock.push(Behavior(body_parts=5, chunk_delay=0.25))
    upstreams = openai_upstreams(mock, timeout=0.6)
    started = time.monotonic()
    with upstreams.open("chat", CHAT, request_id="r") as call:
        with pytest.raises(UpstreamError) as err:
            call.read_json()
    elapsed = time.monotonic() - started
    assert (err.value.status, err.value.code) == (504, "upstream_timeout")
    assert 0.5 < elapsed < 0.95


def test_stalled_stream_times_out_with_504_between_chunks(mock):
    hold = threading.Event()  # never set: the stand-in stalls after the first chunk
    mock.push(Behavior(hold=hold))
    upstreams = openai_upstreams(mock, timeout=30, stream_timeout=0.4)
    with upstreams.open("chat", stream_body(), request_id="r") as call:
        chunks = call.iter_chunks()
        next(chunks)
        started = time.monotonic()
        with pytest.raises(UpstreamError) as err:
            next(chunks)
        elapsed = time.monotonic() - started
    hold.set()
    assert (err.value.status, err.value.code) == (504, "upstream_timeout")
    assert "sent nothing for 0.4s" in str(err.value)
    assert 0.3 < elapsed < 2.0


def test_whole_stream_is_bounded(mock):
    mock.push(Behavior(chunk_delay=0.1))
    deployment = Deployment("gpt-4o", "openai", "gpt-4o", api_base=mock.openai_base, api_key=UPSTREAM_KEY,
                            stream_timeout=1.0)
    upstreams = Upstreams([deployment], environ={}, max_stream_seconds=0.5)
    with upstreams.open("chat", stream_body(max_tokens=50), request_id="r") as call:
        with pytest.raises(UpstreamError) as err:
            for _ in call.iter_chunks():
                pass
    assert (err.value.status, err.value.code) == (504, "upstream_timeout")
    assert "did not finish its answer in time" in str(err.value)


def test_forwarded_client_headers_are_an_explicit_allow_list():
    assert FORWARDED_CLIENT_HEADERS == {"openai-beta", "traceparent", "tracestate"}


def test_unsafe_values_of_allowed_client_headers_are_dropped(mock):
    upstreams = openai_upstreams(mock)
    headers = {"traceparent": "00-abc\r\nX-Injected: 1", "OpenAI-Beta": "assistants=v2"}
    with upstreams.open("chat", CHAT, request_id="bad id\r\nX-Injected: 1", extra_headers=headers) as call:
        call.read_json()
    got = mock.last_request.headers
    assert "traceparent" not in got and "x-injected" not in got and "x-request-id" not in got
    assert got["openai-beta"] == "assistants=v2"



# malformed answers (issue 11, item 8) and non-boolean `stream` (item 7) ----------------------------------------
def scripted_upstreams(server: ScriptedServer, **kw) -> Upstreams:
    return Upstreams([Deployment("gpt-4o", "openai", "gpt-4o", api_base=f"http://127.0.0.1:{server.port}/v1",
                                 api_key=UPSTREAM_KEY, **kw)], environ={})


@pytest.fixture
def scripted():
    server = ScriptedServer()
    yield server
    server.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \xb2\r\n\r\n{}",
    b"HTTP/1.1 2\xb20 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nx-ratelimit-limit-requests: 1\rSet-Cookie: a=b\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nx-ratelimit-limit-requests: 1\x0b\r\nContent-Length: 2\r\n\r\n{}",
])
def test_a_malformed_answer_head_is_502_bad_response(scripted, answer):
    scripted.answer(answer, close=True)
    with pytest.raises(UpstreamError) as err:
        scripted_upstreams(scripted).open("chat", CHAT, request_id="r")
    assert (err.value.status, err.value.code) == (502, "upstream_bad_response")


def test_a_malformed_body_framing_is_502_bad_response(scripted):
    scripted.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"2\r\n{}\r\nzz\r\n", close=True)
    with scripted_upstreams(scripted).open("chat", CHAT, request_id="r") as call:
        with pytest.raises(UpstreamError) as err:
            call.read_json()
    assert (err.value.status, err.value.code) == (502, "upstream_bad_response")


@pytest.mark.parametrize("status", [200, 500])
def test_deeply_nested_json_from_the_upstream_is_502_bad_response(scripted, status):
    body = b"[" * 100_000 + b"]" * 100_000
    scripted.answer(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (status, len(body), body))
    with scripted_upstreams(scripted).open("chat", CHAT, request_id="r") as call:
        if status == 200:
            with pytest.raises(UpstreamError) as err:
                call.read_json()
            assert (err.value.status, err.value.code) == (502, "upstream_bad_response")
        else:
            assert call.read_json()["error"]["message"] == "the upstream for model 'gpt-4o' answered HTTP 500"


def test_deeply_nested_json_in_a_stream_is_passed_on_but_not_read_for_usage(scripted):
    event = b"data: {\"usage\": {\"x\": " + b"[" * 100_000 + b"]" * 100_000 + b"}}\n\n"
    scripted.answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(event), event))
    with scripted_upstreams(scripted).open("chat", stream_body(), request_id="r") as call:
        assert b"".join(call.iter_chunks()) == event
    assert call.usage is None


@pytest.mark.parametrize("stream", [1, 0, "true", "false", [], {}])
def test_a_stream_flag_that_is_not_a_boolean_is_400_and_nothing_is_sent(mock, stream):
    with pytest.raises(BadRequestError) as err:
        openai_upstreams(mock).open("chat", stream_body(stream=stream), request_id="r")
    assert err.value.status == 400 and str(err.value) == "`stream` must be true or false"
    assert mock.requests == []


def test_an_event_stream_answer_to_a_plain_request_is_read_for_usage(mock):
    # A server that streams whatever it was asked: the answer is relayed as a stream, and read as one.
    mock.push(Behavior(raw_body=b'data: {"choices":[]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":3,'
                                b'"completion_tokens":2}}\n\ndata: [DONE]\n\n', content_type="text/event-stream"))
    with openai_upstreams(mock).open("chat", CHAT, request_id="r") as call:
        assert call.is_stream
        b"".join(call.iter_chunks())
    assert call.usage == (3, 2)


# the standalone stand-in, and cooperative use under gevent ---------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]

GEVENT_CLIENT = r"""
from gevent import monkey; monkey.patch_all()
import json, sys, gevent
from regate.compiler.model import Deployment
from regate.enforcer.upstreams import Upstreams

upstreams = Upstreams([Deployment("m", "openai", "m", api_base=sys.argv[1], api_key="sk-standalone")], environ={})
events, usage = [], {}

def stream(name):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "stream": True}
    with upstreams.open("chat", body, request_id=name) as call:
        for _ in call.iter_chunks():
            events.append(name)
        usage[name] = call.usage
    events.append(name + ":end")

gevent.joinall([gevent.spawn(stream, "a"), gevent.spawn(stream, "b")], raise_error=True)
print(json.dumps({"events": events, "usage": usage}))
"""


@pytest.fixture(scope="module")
def standalone_mock():
    port = free_port()
    command = [sys.executable, "-m", "tests.support.mock_openai", "--port", str(port), "--api-key", "sk-standalone",
               "--chunk-delay", "0.01"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=15)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_standalone_stand_in_serves_openai_requests(standalone_mock):
    upstreams = Upstreams([Deployment("m", "openai", "gpt-4o-mini", api_base=standalone_mock,
                                      api_key="sk-standalone")], environ={})
    with upstreams.open("chat", {**CHAT, "model": "m"}, request_id="r") as call:
        assert call.status == 200 and call.read_json()["model"] == "gpt-4o-mini"
        assert call.usage == (5, 4)


def test_streams_interleave_under_gevent(standalone_mock):
    result = subprocess.run([sys.executable, "-c", GEVENT_CLIENT, standalone_mock], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    events = outcome["events"]
    # Each greenlet received chunks while the other's stream was still open: the reads cooperate.
    assert events.index("b") < events.index("a:end") and events.index("a") < events.index("b:end")
    assert outcome["usage"] == {"a": [1, 10], "b": [1, 10]}


# TLS ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ca(tmp_path_factory):
    return make_test_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_mock(local_ca):
    with MockOpenAI(api_key=UPSTREAM_KEY, ssl_context=local_ca.server_context()) as server:
        yield server


def test_https_upstream_with_a_trusted_certificate(tls_mock, local_ca):
    upstreams = Upstreams([Deployment("gpt-4o", "openai", "gpt-4o", api_base=tls_mock.openai_base,
                                      api_key=UPSTREAM_KEY)], environ={}, ssl_context=local_ca.client_context())
    assert tls_mock.openai_base.startswith("https://")
    for _ in range(2):
        with upstreams.open("chat", CHAT, request_id="r") as call:
            assert call.status == 200 and call.read_json()["usage"]["completion_tokens"] == 4
    assert len({r.peer for r in tls_mock.requests}) == 1  # kept alive over TLS too
    with upstreams.open("chat", stream_body(), request_id="r") as call:
        assert b"".join(call.iter_chunks()).endswith(b"data: [DONE]\n\n")
        assert call.usage == (4, 5)


@pytest.mark.parametrize("host, trusted", [
    ("127.0.0.1", False),  # the system's CAs do not know the test CA
    ("localhost", True),  # the certificate names 127.0.0.1 only
])
def test_https_upstream_that_cannot_be_verified_is_502_and_gets_nothing(tls_mock, local_ca, host, trusted):
    api_base = f"https://{host}:{tls_mock.port}/v1"
    context = local_ca.client_context() if trusted else None
    upstreams = Upstreams([Deployment("gpt-4o", "openai", "gpt-4o", api_base=api_base, api_key=UPSTREAM_KEY)],
                          environ={}, ssl_context=context)
    with pytest.raises(UpstreamError) as err:
        upstreams.open("chat", CHAT, request_id="r")
    assert (err.value.status, err.value.code) == (502, "upstream_tls_error")
    assert tls_mock.requests == [] and UPSTREAM_KEY not in str(err.value)


def test_tls_handshake_is_bounded_by_the_connect_timeout():
    # A listener that never answers: TCP connects (the kernel's backlog), the handshake hangs.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        api_base = f"https://127.0.0.1:{silent.getsockname()[1]}/v1"
        upstreams = Upstreams([Deployment("gpt-4o", "openai", "gpt-4o", api_base=api_base, api_key=UPSTREAM_KEY)],
                              environ={}, connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(UpstreamError) as err:
            upstreams.open("chat", CHAT, request_id="r")
    assert (err.value.status, err.value.code) == (504, "upstream_timeout")
    assert time.monotonic() - started < 2.0


def test_ssl_cert_file_trusts_a_private_ca(tls_mock, local_ca, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(local_ca.ca_pem))  # as the README tells operators
    upstreams = Upstreams([Deployment("gpt-4o", "openai", "gpt-4o", api_base=tls_mock.openai_base,
                                      api_key=UPSTREAM_KEY)], environ={})
    with upstreams.open("chat", CHAT, request_id="r") as call:
        assert call.status == 200


def test_closing_the_drains_cuts_them_short_and_each_still_records(mock):
    """At shutdown (gunicorn's worker_exit) a drain waiting on a stalled upstream stops at once, so its
    spend reaches the writer before the writer flushes."""
    from regate.enforcer.stream_drains import StreamDrains

    stall = threading.Event()
    mock.push(Behavior(hold=stall))
    drains, recorded = StreamDrains(), []
    try:
        call = openai_upstreams(mock).open("chat", stream_body(), request_id="r")  # waits 600 s by default
        call.read_chunk()
        drains.start(call, lambda: recorded.append(call.events))
        drains.close(timeout=10)
        assert recorded == [1]
    finally:
        stall.set()
