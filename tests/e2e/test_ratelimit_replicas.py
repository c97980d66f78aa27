"""Limits shared by replicas: two pods (enforcer with two gunicorn workers beside its own OPA) on one
PostgreSQL database and one Redis, as deploy/ runs them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.support.redis import RedisServer

from .conftest import Client, assert_openai_error, chat_body, team_token
from .test_budgets import wait_for_minute_room

CALL = chat_body(max_tokens=10)


def new_key(replica, admin_token, **fields) -> str:
    status, body, _ = replica.client.post("/key/generate", fields, token=admin_token)
    assert status == 200, body
    return body["key"]


def test_rpm_is_exact_across_two_replicas_of_two_workers(start_replicas, redis_url, admin_token, fresh_upstream):
    replicas = start_replicas(2, workers=2, env={"REDIS_URL": redis_url})
    status, body, _ = replicas[0].client.post("/team/new", {"team_id": "rl-team"}, token=admin_token)
    assert status == 200, body
    key = new_key(replicas[0], admin_token, team_id="rl-team", rpm_limit=37)
    clients = [Client(r.url) for r in replicas for _ in range(10)]
    wait_for_minute_room()
    try:
        with ThreadPoolExecutor(max_workers=100) as pool:
            answers = list(pool.map(lambda i: clients[i % len(clients)].post("/v1/chat/completions", CALL, token=key),
                                    range(400)))
    finally:
        for c in clients:
            c.close()
    statuses = [a[0] for a in answers]
    assert statuses.count(200) == 37 and statuses.count(429) == 363, sorted(set(statuses))
    assert all(a[2]["x-ratelimit-limit-requests"] == "37" for a in answers)


def test_a_budget_reached_on_one_replica_stops_the_other_within_a_second(start_replicas, redis_url, idp, admin_token,
                                                                          fresh_upstream):
    """The staleness bound: the writer of A commits within its flush interval (0.2 s) and B's cached
    read of the team's period spend expires after 0.5 s; the target is 1 s (1.5 s allowed here for a
    loaded CI host)."""
    a, b = start_replicas(2, env={"REDIS_URL": redis_url})
    status, body, _ = a.client.post("/team/new", {"team_id": "stale-team", "max_budget": 0.0000063,
                                                  "budget_duration": "1d"}, token=admin_token)
    assert status == 200, body
    # The period is a function of the duration and the clock: both replicas name the same reset.
    resets = {r.client.get("/team/info?team_id=stale-team", token=admin_token)[1]["team_info"]["budget_reset_at"]
              for r in (a, b)}
    assert len(resets) == 1 and resets.pop().endswith("T00:00:00Z"), resets
    token = team_token(idp, "stale-team", "stale-user")
    assert b.client.post("/v1/chat/completions", CALL, token=token)[0] == 200  # B has read the team's spend: 0
    assert a.client.post("/v1/chat/completions", CALL, token=token)[0] == 200  # A spends the whole budget
    spent_at = time.monotonic()
    while (answer := b.client.post("/v1/chat/completions", CALL, token=token))[0] == 200:
        assert time.monotonic() - spent_at < 1.5, "replica B still allows the team after 1.5 s"
    assert answer[0] == 400 and answer[1]["error"]["type"] == "budget_exceeded", answer


def test_redis_down_fails_closed_for_limited_principals_only(start_replicas, idp, admin_token, fresh_upstream):
    with RedisServer() as redis:
        (replica,) = start_replicas(1, env={"REDIS_URL": redis.url})
        status, body, _ = replica.client.post("/team/new", {"team_id": "down-team"}, token=admin_token)
        assert status == 200, body
        limited = new_key(replica, admin_token, team_id="down-team", rpm_limit=100)
        unlimited = team_token(idp, "down-team", "down-user")  # the team itself has no limits
        assert replica.client.post("/v1/chat/completions", CALL, token=limited)[0] == 200
        redis.stop()
        status, body, headers = replica.client.post("/v1/chat/completions", CALL, token=limited)
        message = assert_openai_error(body, 503)
        assert message == "rate limits cannot be checked: Redis did not answer (ConnectionError)", message
        assert headers["X-Regate-Reason"] == "rate_limits_unavailable"
        assert replica.client.post("/v1/chat/completions", CALL, token=unlimited)[0] == 200
        redis.start()
        deadline = time.monotonic() + 10
        while (answer := replica.client.post("/v1/chat/completions", CALL, token=limited))[0] != 200:
            assert time.monotonic() < deadline, answer
            time.sleep(0.05)
