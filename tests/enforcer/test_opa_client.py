"""enforcer.decisions.OpaClient's transport rules, against a scripted loopback server."""

from __future__ import annotations

import json

import pytest

from regate.common.errors import DecisionError
from regate.enforcer.decisions import OpaClient, parse_decision
from tests.support.scripted_server import ScriptedServer

ALLOW = {"allow": True, "status": 200, "reasons": [], "message": "", "role": "team", "upsert_user": False,
         "upsert_team": False,
         "subject": {"user_id": None, "team_id": "t1", "org_id": None, "end_user_id": None, "email": None}}


def answer(doc: dict) -> bytes:
    body = json.dumps(doc).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


def test_a_kept_alive_connection_closed_unanswered_is_retried_once_on_a_new_one(server):
    server.answer(answer({"result": ALLOW, "decision_id": "d1"}))
    server.answer(b"", close=True)  # OPA went away between requests: the reused connection ends
    server.answer(answer({"result": ALLOW, "decision_id": "d2"}))
    client = OpaClient(f"http://127.0.0.1:{server.port}")
    assert client.decide({"request": {}}).decision_id == "d1"
    assert client.decide({"request": {}}).decision_id == "d2"
    assert server.connections == 2 and len(server.requests) == 3
    client.close()


def test_a_second_unanswered_attempt_is_unavailable_never_an_allow(server):
    server.answer(b"", close=True)
    server.answer(b"", close=True)
    client = OpaClient(f"http://127.0.0.1:{server.port}")
    with pytest.raises(DecisionError) as err:
        client.decide({"request": {}})
    assert err.value.code == "decision_unavailable"
    client.close()


def test_a_slow_answer_is_a_timeout_and_not_retried(server):
    server.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")  # never finishes
    client = OpaClient(f"http://127.0.0.1:{server.port}", timeout=0.2)
    with pytest.raises(DecisionError) as err:
        client.decide({"request": {}})
    assert err.value.code == "decision_timeout" and len(server.requests) == 1
    client.close()


def test_a_fresh_connection_closed_unanswered_is_not_retried(server):
    # Only a kept-alive connection may have been closed by OPA while idle; a new one failing is OPA failing.
    server.answer(b"", close=True)
    server.answer(answer({"result": ALLOW}))
    client = OpaClient(f"http://127.0.0.1:{server.port}")
    with pytest.raises(DecisionError) as err:
        client.decide({"request": {}})
    assert err.value.code == "decision_unavailable" and len(server.requests) == 1
    client.close()


def test_the_timeout_bounds_the_whole_decision_retry_included(server):
    server.answer(answer({"result": ALLOW, "decision_id": "d1"}))
    server.answer(b"", close=True, delay=0.6)  # the kept-alive connection: closed unanswered, late
    server.answer(answer({"result": ALLOW, "decision_id": "d2"}), delay=0.6)  # each wait alone is < 1 s
    client = OpaClient(f"http://127.0.0.1:{server.port}", timeout=1.0)
    assert client.decide({"request": {}}).decision_id == "d1"
    with pytest.raises(DecisionError) as err:
        client.decide({"request": {}})
    assert err.value.code == "decision_timeout" and len(server.requests) == 3
    client.close()


def test_an_answer_dripped_byte_by_byte_is_bounded_by_the_timeout(server):
    server.answer(answer({"result": ALLOW}), drip=0.01)  # every byte well within the timeout, the whole not
    client = OpaClient(f"http://127.0.0.1:{server.port}", timeout=0.5)
    with pytest.raises(DecisionError) as err:
        client.decide({"request": {}})
    assert err.value.code == "decision_timeout"
    client.close()


@pytest.mark.parametrize("headroom,allow", [(0, True), (-5, True), (1.5, True), (True, True), ("7", True), (7, False)])
def test_a_budget_headroom_must_be_a_positive_integer_on_an_allow(headroom, allow):
    # The decision cache reuses an allow on it: a malformed one fails closed like any malformed decision.
    result = dict(ALLOW, budget_headroom_nanos=headroom)
    if not allow:
        result.update(allow=False, status=400, reasons=["budget_exceeded"])
    with pytest.raises(DecisionError) as err:
        parse_decision(result)
    assert err.value.code == "decision_malformed"


def test_a_decision_without_a_headroom_has_no_bound():
    # Bundles compiled before the field existed: reused for the identical input only.
    assert parse_decision(ALLOW).budget_headroom_nanos is None
    assert parse_decision(dict(ALLOW, budget_headroom_nanos=7)).budget_headroom_nanos == 7
