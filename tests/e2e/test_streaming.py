"""Server-sent-event streams through the real enforcer (gunicorn's gevent worker): chunks pass as
they arrive, the usage of the final chunk is recorded as spend, and a client that leaves is billed
all the same: the usage the upstream sends after, or an estimate.
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

from regate.enforcer import usage_estimate
from tests.support.mock_openai import Behavior

from .conftest import SseStream, chat_body, leave_mid_stream, metric, team_token

# examples/regate.yaml prices gpt-4o-mini at 0.00000015 / 0.0000006 USD per token: in nano-USD
INPUT_NANOS, OUTPUT_NANOS = 150, 600


def spend_row(client, admin_token: str, team: str, request_id: str, timeout: float = 10.0) -> dict:
    """The spend-log row of one request (the spend writer batches, so wait for it)."""
    deadline = time.monotonic() + timeout
    while True:
        status, rows, _ = client.get(f"/spend/logs?team_id={team}", token=admin_token)
        assert status == 200, rows
        found = [r for r in rows if r["request_id"] == request_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no spend row for request {request_id}: {rows}")
        time.sleep(0.1)


def poll(predicate, message: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


def test_first_chunk_arrives_before_the_upstream_finishes(enforcer, idp, fresh_upstream):
    hold = threading.Event()
    fresh_upstream.push(Behavior(hold=hold))  # after its first chunk, the upstream waits for `hold`
    stream = SseStream(enforcer.url, team_token(idp, team="team-stream"), chat_body(stream=True, max_tokens=5))
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type").startswith("text/event-stream")
        [first] = stream.read_events(1)
        # The client holds the first chunk while the upstream is still inside its stream.
        [upstream_call] = fresh_upstream.requests
        assert not hold.is_set() and not upstream_call.completed and fresh_upstream.streams_completed == 0
        assert first == upstream_call.sent[0]
        assert b'"role":"assistant"' in first
        hold.set()
        body = stream.read_rest()
    finally:
        hold.set()
        stream.close()
    assert upstream_call.completed
    assert body == upstream_call.response_body  # byte for byte what the upstream sent
    assert body.endswith(b"data: [DONE]\n\n")


def test_usage_of_the_final_chunk_is_recorded(client, enforcer, idp, admin_token, fresh_upstream):
    team = f"team-usage-{time.monotonic_ns()}"
    status, body, headers = client.post("/v1/chat/completions",
                                        chat_body(content="count these five words", stream=True, max_tokens=7),
                                        token=team_token(idp, team=team, user="stream-user"))
    assert status == 200
    [received] = fresh_upstream.requests
    # the client did not ask for usage; regate asks the upstream, so spend can be recorded
    assert received.body["stream_options"] == {"include_usage": True}
    usage_events = [json.loads(e[6:]) for e in body.split("\n\n") if e.startswith("data: {") and '"usage":{' in e]
    assert usage_events[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}

    row = spend_row(client, admin_token, team, headers["X-Request-ID"])
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (4, 7, 11)
    assert row["spend_nanos"] == 4 * INPUT_NANOS + 7 * OUTPUT_NANOS
    assert (row["status"], row["model"], row["user_id"]) == ("success", "gpt-4o-mini", "stream-user")


def test_a_client_that_leaves_is_billed_the_usage_the_upstream_sends_after(client, enforcer, idp, admin_token,
                                                                             fresh_upstream):
    """The upstream bills the whole call: regate reads on after the client left, for the final
    chunk's usage, and does so off the client's request (issue 11, item 4)."""
    team = f"team-leaver-{time.monotonic_ns()}"
    metrics = SimpleNamespace(client=client)
    idle = metric(metrics, "regate_requests_in_flight")  # the /metrics request itself
    left, later = threading.Event(), threading.Event()
    # The upstream sends one chunk, waits until the client has left, sends ten (the server notices the
    # client is gone when it writes them), then waits again.
    fresh_upstream.push(Behavior(holds={1: left, 11: later}))
    request_id = leave_mid_stream(enforcer.url, team_token(idp, team=team),
                                  chat_body(content="five words in this prompt", stream=True, max_tokens=30), left)
    try:
        # Its request is over (the in-flight gauge is back), though the upstream is still inside its answer.
        poll(lambda: metric(metrics, "regate_requests_in_flight") == idle, "the request stayed in flight")
        [upstream_call] = fresh_upstream.requests
        assert not upstream_call.completed and not later.is_set()
    finally:
        later.set()
    poll(lambda: upstream_call.completed, "the upstream's answer was not read to its end")
    row = spend_row(client, admin_token, team, request_id)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 30)  # the upstream's own count
    assert row["spend_nanos"] == 5 * INPUT_NANOS + 30 * OUTPUT_NANOS
    assert (row["status"], row["usage_estimated"]) == ("incomplete", False)


def test_a_stream_without_usage_is_billed_an_estimate(client, idp, admin_token, fresh_upstream):
    team = f"team-no-usage-{time.monotonic_ns()}"
    events = [b'data: {"choices":[{"index":0,"delta":{"content":"tok%d "}}]}\n\n' % i for i in range(6)]
    fresh_upstream.push(Behavior(raw_body=b"".join(events) + b"data: [DONE]\n\n", content_type="text/event-stream"))
    request = chat_body(content="count these words please", stream=True)
    status, body, headers = client.post("/v1/chat/completions", request, token=team_token(idp, team=team))
    assert status == 200 and body.count("data: {") == 6
    row = spend_row(client, admin_token, team, headers["X-Request-ID"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage_estimate.prompt_tokens("chat", request), 6)
    assert row["prompt_tokens"] > 0 and row["spend_nanos"] > 0
    assert (row["status"], row["usage_estimated"]) == ("success", True)


def test_an_answer_without_usage_is_billed_an_estimate_too(client, idp, admin_token, fresh_upstream):
    # Not a stream, but the same hole: an upstream that sends no usage must not make calls free.
    team = f"team-no-usage-whole-{time.monotonic_ns()}"
    answer = {"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "sixteen characters, then a few more"},
         "finish_reason": "stop"}]}
    fresh_upstream.push(Behavior(raw_body=json.dumps(answer).encode()))
    request = chat_body(content="count these words please")
    status, body, headers = client.post("/v1/chat/completions", request, token=team_token(idp, team=team))
    assert status == 200 and body["choices"] == answer["choices"]
    row = spend_row(client, admin_token, team, headers["X-Request-ID"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage_estimate.prompt_tokens("chat", request),
                                                                usage_estimate.completion_tokens("chat", answer))
    assert row["completion_tokens"] == 9 and row["spend_nanos"] > 0
    assert (row["status"], row["usage_estimated"]) == ("success", True)
    # An error answer is not billed by the provider: nothing estimated.
    fresh_upstream.push(Behavior.fail(400, "bad request"))
    status, _, headers = client.post("/v1/chat/completions", request, token=team_token(idp, team=team))
    assert status == 400
    row = spend_row(client, admin_token, team, headers["X-Request-ID"])
    assert (row["prompt_tokens"], row["completion_tokens"], row["spend_nanos"], row["usage_estimated"]) == (0, 0, 0, False)


def test_upstream_breaking_off_ends_the_stream_with_an_error_event(client, idp, fresh_upstream):
    fresh_upstream.push(Behavior(drop_after_chunks=3))
    status, body, _ = client.post("/v1/chat/completions", chat_body(stream=True), token=team_token(idp))
    assert status == 200
    events = [e for e in body.split("\n\n") if e]
    assert len(events) == 4 and all(e.startswith("data: {") for e in events)
    error = json.loads(events[-1][6:])["error"]
    assert error["code"] == "502" and "closed the connection" in error["message"]
