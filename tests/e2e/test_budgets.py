"""Budgets and rate limits end to end: real OPA deciding budget_exceeded from store facts, the
enforcer under gunicorn with two workers, real counters (the host's SQLite file here; Redis
shared by replicas in test_ratelimit_replicas.py), the OpenAI stand-in upstream.

Costs are known exactly: gpt-4o-mini is priced in the example's model_info (0.15 and 0.60 USD
per million tokens), the stand-in counts the prompt's words and answers max_tokens tokens.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from tests.support.mock_openai import Behavior

from .conftest import (
    EXAMPLE,
    MASTER_KEY,
    Client,
    SseStream,
    assert_openai_error,
    chat_body,
    config_stack,
    enforcer_env,
    leave_mid_stream,
    metric,
    team_token,
)

END_USER_BUDGET = "0.00001"  # USD: litellm_settings.max_end_user_budget of the config below
CALL_NANOS = 2 * 150 + 10 * 600  # "hello there" (2 tokens in) answered with max_tokens=10


def budget_config(tmp_path, extra: str = "") -> str:
    """The example config with budget settings (litellm_settings is its last but one section)."""
    text = EXAMPLE.read_text().replace("litellm_settings:\n", f"""litellm_settings:
  max_end_user_budget: {END_USER_BUDGET}
  upperbound_key_generate_params:
    rpm_limit: 600
{extra}""", 1)
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def world(opa_bin, idp, upstream, tmp_path_factory):
    """The budget config's own OPA and enforcer (two workers); `url` is the enforcer's."""
    tmp = tmp_path_factory.mktemp("budgets")
    with config_stack(opa_bin, budget_config(tmp), enforcer_env(idp, upstream), tmp, workers=2) as stack:
        yield SimpleNamespace(url=stack.base_url)


@pytest.fixture
def client(world):
    c = Client(world.url)
    yield c
    c.close()


def call(client, token, team: str | None = None, **extra):
    """A chat completion; `team` sends x-litellm-team-id (which of the token's teams it runs as)."""
    headers = {"x-litellm-team-id": team} if team is not None else None
    return client.post("/v1/chat/completions", chat_body(max_tokens=10, **extra), token=token, headers=headers)


def new_key(client, admin_token, **fields) -> str:
    status, body, _ = client.post("/key/generate", fields, token=admin_token)
    assert status == 200, body
    return body["key"]


def new_team(client, admin_token, team_id: str, **fields) -> None:
    status, body, _ = client.post("/team/new", {"team_id": team_id, **fields}, token=admin_token)
    assert status == 200, body


def assert_budget_exceeded(answer, message_start: str) -> str:
    status, body, headers = answer
    message = assert_openai_error(body, 400)
    assert body["error"]["type"] == "budget_exceeded", body  # LiteLLM's ProxyErrorTypes.budget_exceeded
    assert headers["X-Regate-Reason"] == "budget_exceeded"
    assert message.startswith(message_start), message
    return message


def test_a_key_that_reached_its_budget_is_refused_before_the_upstream(client, admin_token, fresh_upstream):
    new_team(client, admin_token, "b-team-1")
    key = new_key(client, admin_token, team_id="b-team-1", max_budget=0.0000063)  # exactly one call
    status, body, headers = call(client, key)
    assert status == 200, body
    calls = len(fresh_upstream.requests)
    # The very next request is refused: the worker that served the call counts its spend at once,
    # the other worker once the writer committed it (the stale bound, see test_ratelimit_replicas).
    deadline = time.monotonic() + 1.0
    while True:
        answer = call(client, key)
        if answer[0] == 400 or time.monotonic() > deadline:
            break
    message = assert_budget_exceeded(answer, "Budget has been exceeded! Current cost: ")
    assert message.endswith(", Max budget: 0.0000063"), message
    assert len(fresh_upstream.requests) <= calls + 1  # at most the other worker's one call before the commit
    status, info, _ = client.get(f"/key/info?key={key}", token=admin_token)
    assert status == 200 and info["info"]["max_budget_nanos"] == CALL_NANOS, info
    assert info["info"]["budget_spend_nanos"] >= CALL_NANOS and info["info"]["budget_reset_at"] is None, info


def test_the_same_worker_refuses_the_next_request_at_once(client, admin_token, idp, fresh_upstream):
    """One keep-alive connection stays on one worker: its own unwritten spend counts immediately."""
    new_team(client, admin_token, "b-team-2", max_budget=0.0000063)
    token = team_token(idp, "b-team-2", "b-user-2")
    one = Client(client.base_url)
    one.http = type(one.http)(maxsize=1, retries=False)  # one connection: one worker
    try:
        assert call(one, token)[0] == 200
        assert_budget_exceeded(call(one, token), "Budget has been exceeded! Team=b-team-2 Current cost: 0.0000063")
    finally:
        one.close()


def test_streamed_spend_counts(client, admin_token, idp, fresh_upstream):
    new_team(client, admin_token, "b-team-3", max_budget=0.0000063)
    token = team_token(idp, "b-team-3", "b-user-3")
    stream = SseStream(client.base_url, token, chat_body(max_tokens=10, stream=True))
    try:
        assert stream.response.status == 200
        assert stream.read_rest().endswith(b"data: [DONE]\n\n")
    finally:
        stream.close()
    key = new_key(client, admin_token, team_id="b-team-3")  # a key of the team spends the team's budget
    deadline = time.monotonic() + 1.0
    while (answer := call(client, key))[0] == 200 and time.monotonic() < deadline:
        pass
    assert_budget_exceeded(answer, "Budget has been exceeded! Team=b-team-3 Current cost: 0.0000063, Max budget: 0.0000063")
    assert answer is not None


def test_a_token_with_several_teams_spends_the_budget_of_the_team_it_runs_as(client, admin_token, idp, fresh_upstream):
    """The example's `groups` claim grants several teams; each request runs as one (x-litellm-team-id,
    else the first) and spends that team's budget, never another of the token's teams'."""
    new_team(client, admin_token, "b-team-20", max_budget=0.0000063)  # exactly one call
    new_team(client, admin_token, "b-team-21", max_budget=1)
    token = idp.mint({"sub": "b-user-20", "email": "b-user-20@example.com", "groups": ["b-team-20", "b-team-21"]})
    assert call(client, token, team="b-team-20")[0] == 200
    deadline = time.monotonic() + 1.0
    while (answer := call(client, token, team="b-team-20"))[0] == 200 and time.monotonic() < deadline:
        pass
    assert_budget_exceeded(answer, "Budget has been exceeded! Team=b-team-20 Current cost: 0.0000063")
    assert_budget_exceeded(call(client, token), "Budget has been exceeded! Team=b-team-20 ")  # the first team
    for _ in range(3):  # the other team's budget is its own
        status, body, _ = call(client, token, team="b-team-21")
        assert status == 200, body
    deadline = time.monotonic() + 5
    while (info := client.get("/team/info?team_id=b-team-21", token=admin_token)[1]["team_info"])["requests"] < 3:
        assert time.monotonic() < deadline, info  # written by the spend writer within a batch
        time.sleep(0.05)
    assert info["budget_spend_nanos"] == 3 * CALL_NANOS, info
    spent = client.get("/team/info?team_id=b-team-20", token=admin_token)[1]["team_info"]
    assert spent["budget_spend_nanos"] <= 2 * CALL_NANOS, spent  # one call, at most one more from the other worker


def test_rate_limits_count_for_the_team_the_request_runs_as(client, admin_token, idp, fresh_upstream):
    new_team(client, admin_token, "b-team-22", rpm_limit=2)
    new_team(client, admin_token, "b-team-23")
    token = idp.mint({"sub": "b-user-22", "email": "b-user-22@example.com", "groups": ["b-team-22", "b-team-23"]})
    wait_for_minute_room()
    assert [call(client, token, team="b-team-22")[0] for _ in range(3)] == [200, 200, 429]
    assert call(client, token)[0] == 429  # the first team, whose limit is used up
    assert [call(client, token, team="b-team-23")[0] for _ in range(3)] == [200] * 3  # another team: not counted


def test_a_stream_its_client_left_holds_its_slot_until_drained_then_counts_its_tokens(client, admin_token, world,
                                                                                      fresh_upstream):
    """The upstream goes on after the client left (issue 11): regate reads on for the usage, and the
    call stays in flight for max_parallel_requests until then; its tokens then count for tpm_limit."""
    new_team(client, admin_token, "b-team-24")
    key = new_key(client, admin_token, team_id="b-team-24", max_parallel_requests=1, tpm_limit=1000)
    wait_for_minute_room()
    gauge = SimpleNamespace(client=client)
    idle = metric(gauge, "regate_requests_in_flight")  # the /metrics request itself
    left, later = threading.Event(), threading.Event()
    fresh_upstream.push(Behavior(holds={1: left, 11: later}))  # one chunk; ten once the client left; then wait
    leave_mid_stream(world.url, key, chat_body(content="five words in this prompt", stream=True, max_tokens=30), left)
    try:
        deadline = time.monotonic() + 10
        while metric(gauge, "regate_requests_in_flight") != idle:  # its request is over, its drain is not
            assert time.monotonic() < deadline, "the request stayed in flight"
            time.sleep(0.05)
        status, body, _ = call(client, key)
        assert (status, assert_openai_error(body, 429)) == (429, "Rate limit exceeded for this key: 1 parallel "
                                                                  "requests of 1 allowed")
    finally:
        later.set()
    deadline = time.monotonic() + 10
    while (answer := call(client, key))[0] == 429:  # the drain read the usage and let the slot go
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)
    status, _, headers = answer
    assert status == 200 and headers["x-ratelimit-remaining-tokens"] == str(1000 - 5 - 30), headers


def test_a_bad_request_lets_its_parallel_slot_go(client, admin_token, fresh_upstream):
    """Refused after admission (the upstream never called): the counters are released at once."""
    new_team(client, admin_token, "b-team-25")
    key = new_key(client, admin_token, team_id="b-team-25", max_parallel_requests=1)
    for bad in ({"stream": 1}, {"model": "no-such-model"}):
        status, body, _ = call(client, key, **bad)
        assert status == 400 and body["error"]["type"] != "rate_limit_error", body
    status, body, _ = call(client, key)
    assert status == 200, body


def test_a_users_budget_binds_its_own_tokens_not_its_team_keys(client, admin_token, idp, fresh_upstream):
    status, body, _ = client.post("/user/new", {"user_id": "b-user-4", "max_budget": 0}, token=admin_token)
    assert status == 200 and body["max_budget"] == 0.0, body
    loner = idp.mint({"sub": "b-user-4", "email": "b-user-4@example.com"})  # internal_user: no team
    assert_budget_exceeded(call(client, loner), "ExceededBudget: User=b-user-4 over budget. Spend=0, Budget=0")
    new_team(client, admin_token, "b-team-4")
    team_key = new_key(client, admin_token, team_id="b-team-4", user_id="b-user-4")
    assert call(client, team_key)[0] == 200  # LiteLLM's rule: a team key spends the team's budget only


def test_end_users_get_the_default_budget_unless_they_have_their_own(client, admin_token, idp, fresh_upstream):
    capped = team_token(idp, "b-team-5", "b-user-5", customer_id="b-customer-default")
    for _ in range(2):  # 6300 nano-USD per call: the second reaches the 10000 default
        assert call(client, capped)[0] == 200
    deadline = time.monotonic() + 1.0
    while (answer := call(client, capped))[0] == 200 and time.monotonic() < deadline:
        pass
    assert_budget_exceeded(answer, "ExceededBudget: End User=b-customer-default over budget. Spend=0.0000")
    status, body, _ = client.post("/customer/new", {"user_id": "b-customer-rich", "max_budget": 1, "budget_duration": "1d"},
                                  token=admin_token)
    assert status == 200, body
    assert body["litellm_budget_table"]["max_budget"] == 1.0 and body["litellm_budget_table"]["budget_duration"] == "1d"
    rich = team_token(idp, "b-team-5", "b-user-5", customer_id="b-customer-rich")
    for _ in range(3):
        assert call(client, rich)[0] == 200
    deadline = time.monotonic() + 5
    while (info := client.get("/customer/info?end_user_id=b-customer-rich", token=admin_token)[1])["requests"] < 3:
        assert time.monotonic() < deadline, info  # written by the spend writer within a batch
        time.sleep(0.05)
    assert info["spend_nanos"] == 3 * CALL_NANOS, info
    assert info["litellm_budget_table"]["budget_reset_at"].endswith("T00:00:00Z"), info  # 1d: midnight UTC


def wait_for_period_start(seconds: int, margin: float = 0.5) -> None:
    """Poll the clock until a fresh budget period of `seconds` began (periods align to the epoch)."""
    deadline = time.monotonic() + seconds + 1
    while time.time() % seconds > margin:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_budget_resets_after_its_duration_and_keeps_the_lifetime_spend(client, admin_token, fresh_upstream):
    new_team(client, admin_token, "b-team-6")
    key = new_key(client, admin_token, team_id="b-team-6", max_budget=0.0000063, budget_duration="4s")
    wait_for_period_start(4)
    assert call(client, key)[0] == 200
    deadline = time.monotonic() + 1.0
    while (answer := call(client, key))[0] == 200 and time.monotonic() < deadline:
        pass
    message = assert_budget_exceeded(answer, "Budget has been exceeded! Current cost: 0.0000063")
    assert "(the budget resets at " in message, message
    deadline = time.monotonic() + 10
    while (answer := call(client, key))[0] == 400:  # the next period starts with nothing spent
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)
    assert answer[0] == 200, answer
    deadline = time.monotonic() + 5
    while (info := client.get(f"/key/info?key={key}", token=admin_token)[1]["info"])["requests"] < 2:
        assert time.monotonic() < deadline, info
        time.sleep(0.05)
    assert info["spend_nanos"] >= 2 * CALL_NANOS  # lifetime: both periods
    assert info["budget_spend_nanos"] <= info["spend_nanos"] - CALL_NANOS  # this period: not the first call


def test_bad_limits_are_400_naming_the_field(client, admin_token):
    new_team(client, admin_token, "b-team-7")
    cases = [
        ({"max_budget": -1}, "field 'max_budget' must be a non-negative number of USD"),
        ({"budget_duration": "30y"}, "field 'budget_duration' is not a duration: a duration is a whole number 1-999999 "
                                     "followed by s, m, h, d, w or mo (30s, 15m, 12h, 30d, 1mo)"),
        ({"rpm_limit": 1000}, "field 'rpm_limit' is over max limit set in config - user_value=1000; max_value=600"),
        ({"tpm_limit": -5}, "field 'tpm_limit' must be a whole number >= 0"),
        ({"max_parallel_requests": 1.5}, "field 'max_parallel_requests' has the wrong type"),
    ]
    for fields, expected in cases:
        status, body, _ = client.post("/key/generate", {"team_id": "b-team-7", **fields}, token=admin_token)
        assert status == 400 and body["error"]["message"] == expected, (fields, body)
    key = new_key(client, admin_token, team_id="b-team-7")
    status, body, _ = client.post("/key/update", {"key": key, "rpm_limit": None}, token=admin_token)
    assert status == 400, body
    assert body["error"]["message"] == ("field 'rpm_limit' cannot be removed: upperbound_key_generate_params "
                                        "sets its largest value (600)")
    status, body, _ = client.post("/team/update", {"team_id": "b-team-7", "budget_duration": "2 days"}, token=admin_token)
    assert status == 400 and body["error"]["message"].startswith("field 'budget_duration' is not a duration"), body


def test_keys_get_the_upper_bound_when_they_name_no_limit(client, admin_token):
    new_team(client, admin_token, "b-team-8")
    status, body, _ = client.post("/key/generate", {"team_id": "b-team-8"}, token=admin_token)
    assert status == 200 and body["rpm_limit"] == 600, body  # LiteLLM: a field left out gets the bound


def test_budgets_are_exact_to_the_nano_dollar(client, admin_token):
    """17 significant digits: more than a float holds. The body's digits are kept."""
    new_team(client, admin_token, "b-team-13")
    raw = b'{"team_id": "b-team-13", "max_budget": 12345678.123456789}'
    status, body, _ = client.request("POST", "/key/generate", token=admin_token, body=raw,
                                     headers={"Content-Type": "application/json"})
    assert status == 200 and body["max_budget_nanos"] == 12_345_678_123_456_789, body


# -- rate limits on one host (two gunicorn workers, the SQLite counters file) ----------------

def burst(url: str, token: str, n: int, **extra) -> list[tuple[int, dict, dict]]:
    clients = [Client(url) for _ in range(8)]
    try:
        with ThreadPoolExecutor(max_workers=len(clients) * 4) as pool:
            return list(pool.map(lambda i: call(clients[i % len(clients)], token, **extra), range(n)))
    finally:
        for c in clients:
            c.close()


def wait_for_minute_room(seconds_needed: float = 20) -> None:
    """Rate windows are calendar minutes: start a burst only when it cannot straddle two."""
    deadline = time.monotonic() + 61
    while 60 - time.time() % 60 < seconds_needed:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_rpm_is_exact_across_the_hosts_workers(client, admin_token, fresh_upstream):
    new_team(client, admin_token, "b-team-9")
    key = new_key(client, admin_token, team_id="b-team-9", rpm_limit=7)
    wait_for_minute_room()
    answers = burst(client.base_url, key, 40)
    statuses = sorted(a[0] for a in answers)
    assert statuses == [200] * 7 + [429] * 33, statuses
    refused = next(a for a in answers if a[0] == 429)
    message = assert_openai_error(refused[1], 429)
    assert message.startswith("Rate limit exceeded for this key: 7 requests per minute of 7 allowed"), message
    headers = refused[2]
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "7" and headers["x-ratelimit-remaining-requests"] == "0"
    remaining = sorted(int(a[2]["x-ratelimit-remaining-requests"]) for a in answers if a[0] == 200)
    assert remaining == list(range(7)), remaining  # each admitted request saw its own count


def test_tpm_counts_the_real_usage(client, admin_token, fresh_upstream):
    new_team(client, admin_token, "b-team-10")
    key = new_key(client, admin_token, team_id="b-team-10", tpm_limit=30)
    wait_for_minute_room()
    # Each call uses 2 + 10 tokens, counted when its response ends (before the client has it), so
    # whichever worker takes the next call sees them: usage so far is checked, then the call runs.
    for remaining in ("30", "18", "6"):
        status, _, headers = call(client, key)
        assert status == 200 and headers["x-ratelimit-remaining-tokens"] == remaining, headers
    status, body, headers = call(client, key)
    message = assert_openai_error(body, 429)
    assert message.startswith("Rate limit exceeded for this key: 36 tokens per minute of 30 allowed"), message
    assert headers["x-ratelimit-remaining-tokens"] == "0"


def test_max_parallel_requests_with_slow_streams(client, admin_token, fresh_upstream):
    new_team(client, admin_token, "b-team-11")
    key = new_key(client, admin_token, team_id="b-team-11", max_parallel_requests=2)
    hold = threading.Event()
    fresh_upstream.default = Behavior(hold=hold)
    streams = [SseStream(client.base_url, key, chat_body(stream=True)) for _ in range(2)]
    try:
        for s in streams:
            assert s.response.status == 200
            s.read_events(1)  # both are in flight, held after their first chunk
        status, body, headers = call(client, key)
        message = assert_openai_error(body, 429)
        assert message == "Rate limit exceeded for this key: 2 parallel requests of 2 allowed", message
        assert headers["Retry-After"] == "1"
        hold.set()
        for s in streams:
            assert s.read_rest().endswith(b"data: [DONE]\n\n")
    finally:
        hold.set()
        for s in streams:
            s.close()
    fresh_upstream.default = Behavior()
    assert call(client, key)[0] == 200  # both slots are free again


def test_admins_and_other_routes_are_not_limited(client, admin_token, fresh_upstream):
    new_team(client, admin_token, "b-team-12", max_budget=0, rpm_limit=0)
    key = new_key(client, admin_token, team_id="b-team-12")
    assert call(client, key)[0] == 400  # the team's budget of 0 is spent before the first call
    assert client.get("/v1/models", token=key)[0] == 200  # a route that spends nothing
    status, _, _ = client.post("/v1/chat/completions", chat_body(max_tokens=10), token=MASTER_KEY)
    assert status == 200
