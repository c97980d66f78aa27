"""Issue 11 (red-team review) against the real enforcer (gunicorn), its OPA and the stand-in upstream:
client strings that would grow the decision cache, bodies that broke the JSON parser, `stream` flags
that are not booleans. Each is a clean 4xx, and nothing reaches the upstream.
"""

from __future__ import annotations

import json

import pytest

from .conftest import assert_openai_error, chat_body, raw_request, team_token


def test_an_over_long_model_name_is_400_before_any_decision(client, fresh_upstream, enforcer):
    status, body, headers = client.post("/v1/chat/completions", chat_body(model="m" * 2_000_000))
    assert status == 400 and headers["X-Regate-Reason"] == "model_name_too_long", body
    assert assert_openai_error(body, 400) == "the model name is longer than 256 characters"
    assert fresh_upstream.requests == []


def test_a_model_name_at_the_limit_is_decided(client, idp, fresh_upstream):
    status, body, headers = client.post("/v1/chat/completions", chat_body(model="m" * 256))
    assert (status, headers["X-Regate-Reason"]) == (401, "missing_credential")
    status, body, _ = client.post("/v1/chat/completions", chat_body(model="m" * 256), token=team_token(idp))
    assert status == 400 and "is not served by this proxy" in assert_openai_error(body, 400)


@pytest.mark.parametrize("with_token", [False, True])
def test_deeply_nested_json_is_400(client, idp, fresh_upstream, with_token):
    headers = {"Content-Type": "application/json"}
    if with_token:
        headers["Authorization"] = f"Bearer {team_token(idp)}"
    body = b'{"model": "gpt-4o-mini", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, raw, response_headers = raw_request(client.base_url, "POST", "/v1/chat/completions", headers=headers,
                                                body=body)
    assert status == 400 and response_headers["x-regate-reason"] == "json_too_deep", raw
    assert assert_openai_error(json.loads(raw), 400) == "the request body nests JSON too deeply"
    assert fresh_upstream.requests == []


@pytest.mark.parametrize("stream", [1, "true", "yes"])
def test_a_stream_flag_that_is_not_a_boolean_is_400(client, idp, fresh_upstream, stream):
    status, body, headers = client.post("/v1/chat/completions", chat_body(stream=stream), token=team_token(idp))
    assert status == 400 and headers["X-Regate-Reason"] == "bad_request", body
    assert assert_openai_error(body, 400) == "`stream` must be true or false"
    assert fresh_upstream.requests == []


LONE_SURROGATE_BODIES = [
    ("/team/new", b'{"team_id": "t\\ud800"}'),
    ("/team/new", b'{"team_id": "t-ok", "team_alias": "\\udfff"}'),
    ("/team/update", b'{"team_id": "team-a", "team_alias": "\\ud800"}'),
    ("/team/block", b'{"team_id": "\\ud800"}'),
    ("/team/unblock", b'{"team_id": "\\ud800"}'),
    ("/user/new", b'{"user_id": "u\\ud800"}'),
    ("/user/new", b'{"user_id": "u-ok", "user_email": "a\\ud800@example.com"}'),
    ("/key/generate", b'{"user_id": "\\ud800"}'),
    ("/key/generate", b'{"user_id": "u-ok", "models": ["\\ud800"]}'),
    ("/key/delete", b'{"keys": ["sk-\\ud800"]}'),
    ("/key/delete", b'{"key_aliases": ["\\ud800"]}'),
]


def test_management_bodies_with_lone_surrogates_are_400_and_change_nothing(client, admin_token, enforcer):
    from .test_state_management_input import snapshot

    database_url = f"sqlite:///{enforcer.data_dir}/regate.db"
    before = snapshot(database_url)
    for path, raw in LONE_SURROGATE_BODIES:
        status, body, headers = client.request("POST", path, token=admin_token, body=raw,
                                               headers={"Content-Type": "application/json"})
        assert status == 400, (path, raw, status, body)
        assert "is not valid Unicode text" in assert_openai_error(body, 400)
    assert snapshot(database_url) == before


def test_a_dead_workers_gauges_leave_the_metrics(idp, upstream, fresh_upstream, opa, tmp_path):
    """With several workers the gauges are summed over live workers' files; a worker killed while it
    held a stream must not leave its in-flight count behind (gunicorn's child_exit hook)."""
    import os
    import signal
    import threading
    import time
    from types import SimpleNamespace

    from tests.support.enforcer import EnforcerProcess
    from tests.support.mock_openai import Behavior

    from .conftest import EXAMPLE, Client, SseStream, enforcer_env, metric

    def workers(master: int) -> set[int]:
        with open(f"/proc/{master}/task/{master}/children") as f:
            return {int(pid) for pid in f.read().split()}

    with EnforcerProcess(EXAMPLE, env=enforcer_env(idp, upstream), opa_url=opa.url, data_dir=tmp_path,
                         workers=2) as proc:
        client = Client(proc.url)
        stats = SimpleNamespace(client=client)
        hold = threading.Event()
        fresh_upstream.push(Behavior(hold=hold))
        stream = SseStream(proc.url, team_token(idp), chat_body(stream=True))
        try:
            stream.read_events(1)
            assert metric(stats, "regate_requests_in_flight") == 2  # the stream, and this /metrics request
            old = workers(proc.proc.pid)
            for pid in old:
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while len(workers(proc.proc.pid) - old) < 2:
                assert time.monotonic() < deadline, "gunicorn did not replace its workers"
                time.sleep(0.1)
            proc.wait_ready()
            client.close()
            assert metric(stats, "regate_requests_in_flight") == 1  # only this /metrics request
        finally:
            hold.set()
            stream.close()
            client.close()


# A hostile upstream (issue 11, items 1 and 8) ---------------------------------------------------------------
def smuggling_answer(request: bytes) -> bytes:
    """An OpenAI chat completion echoing the caller's message, with usage of its own, followed by a
    second complete answer nobody asked for: on a reused connection, the next caller's answer."""
    body = json.loads(request.split(b"\r\n\r\n", 1)[1])
    text = body["messages"][-1]["content"]
    n = int(text.rsplit("-", 1)[1])
    completion = json.dumps({"id": f"chatcmpl-{n}", "object": "chat.completion", "model": body["model"],
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo {text}"},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 10 * n, "completion_tokens": n,
                                       "total_tokens": 11 * n}}).encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(completion), completion)
    return answer + answer


@pytest.fixture(scope="module")
def hostile(idp, upstream, opa, tmp_path_factory):
    """The enforcer on examples/regate.yaml whose OpenAI upstream is a scripted, hostile server."""
    from tests.support.enforcer import EnforcerProcess
    from tests.support.scripted_server import ScriptedServer

    from .conftest import EXAMPLE, Client, enforcer_env

    server = ScriptedServer(respond=smuggling_answer)
    env = {**enforcer_env(idp, upstream), "OPENAI_API_BASE": f"http://127.0.0.1:{server.port}/v1"}
    with EnforcerProcess(EXAMPLE, env=env, opa_url=opa.url, data_dir=tmp_path_factory.mktemp("hostile")) as proc:
        client = Client(proc.url)
        yield client, server
        client.close()
    server.close()


def test_each_caller_gets_its_own_answer_and_spend_from_a_smuggling_upstream(hostile, idp, admin_token):
    client, server = hostile
    teams = [f"desync-{i}" for i in range(1, 6)]
    for n, team in enumerate(teams, start=1):
        status, body, headers = client.post("/v1/chat/completions", chat_body(content=f"user-{n}"),
                                            token=team_token(idp, team=team, user=f"desync-user-{n}"))
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == f"echo user-{n}", f"caller {n} got another's answer"
        assert body["usage"]["prompt_tokens"] == 10 * n
    assert server.connections == len(teams)  # every connection was given up, none reused
    for n, team in enumerate(teams, start=1):
        rows = wait_for_rows(client, admin_token, team)
        assert [(r["prompt_tokens"], r["completion_tokens"], r["user_id"]) for r in rows] == [
            (10 * n, n, f"desync-user-{n}")]


def wait_for_rows(client, admin_token: str, team: str) -> list[dict]:
    import time

    deadline = time.monotonic() + 10
    while not (rows := client.get(f"/spend/logs?team_id={team}", token=admin_token)[1]):
        assert time.monotonic() < deadline, f"no spend row for {team}"
        time.sleep(0.1)
    return rows


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \xb2\r\n\r\n",
    b"HTTP/1.1 2\xb20 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-ratelimit-remaining-requests: 1\rSet-Cookie: a=b\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-ratelimit-remaining-requests: \x01\r\nContent-Length: 2\r\n\r\n",
], ids=["unicode-length", "unicode-status", "bare-cr", "control-byte"])
def test_a_malformed_upstream_answer_is_502_bad_response(hostile, idp, head):
    client, server = hostile
    server.answer(head + b"{}", close=True)
    status, body, headers = client.post("/v1/chat/completions", chat_body(content="user-1"), token=team_token(idp))
    assert (status, headers.get("X-Regate-Reason")) == (502, "upstream_bad_response"), body
    assert "sent a malformed answer" in assert_openai_error(body, 502)
