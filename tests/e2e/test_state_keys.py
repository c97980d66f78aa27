"""Virtual key lifecycle through the real enforcers (two replicas, one PostgreSQL, own OPAs).

An admin JWT creates a team and keys (LiteLLM's request and response field names), a key
calls a model and its spend is attributed to the key's team/user and to the key, a model
list restricts the key, and a deleted or expired key is refused with 401.
"""

from __future__ import annotations

import time
from decimal import Decimal

import sqlalchemy as sa

from regate.enforcer import schema as tables

from .conftest import chat_body, open_store, team_token

# examples/regate.yaml model_info for gpt-4o-mini, in nano-USD per token.
GPT_4O_MINI_IN, GPT_4O_MINI_OUT = 150, 600


def cost(words: int, max_tokens: int) -> int:
    return GPT_4O_MINI_IN * words + GPT_4O_MINI_OUT * max_tokens


def wait_for_spend(client, path: str, token: str, section: str | None, requests: int, timeout: float = 10.0) -> dict:
    """Spend is written off the request path in batches: poll until `requests` are counted."""
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = client.get(path, token=token)
        assert status == 200, body
        info = body[section] if section else body
        if info["requests"] >= requests or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


def key_count(database_url: str) -> int:
    store = open_store(database_url)
    try:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(tables.virtual_keys)).scalar_one()
    finally:
        store.close()


def assert_error(answer, status: int, reason: str) -> None:
    got, body, headers = answer
    assert got == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == str(status)
    assert headers.get("X-Regate-Reason") == reason, (headers.get("X-Regate-Reason"), body)


def test_team_key_lifecycle(start_replicas, admin_token, pg_database):
    a, b = start_replicas(2)

    status, team, _ = a.client.post("/team/new", {"team_id": "kt-team", "team_alias": "Key Team"}, token=admin_token)
    assert status == 200, team
    assert (team["team_id"], team["team_alias"], team["blocked"], team["models"]) == ("kt-team", "Key Team", False, [])

    status, made, _ = a.client.post("/key/generate", {"team_id": "kt-team", "key_alias": "kt-ci",
                                                      "models": ["gpt-4o-mini"]}, token=admin_token)
    assert status == 200, made
    key = made["key"]
    assert key.startswith("sk-") and len(key) > 40
    assert made["team_id"] == "kt-team" and made["user_id"] is None and made["key_alias"] == "kt-ci"
    assert made["models"] == ["gpt-4o-mini"] and made["expires"] is None
    assert made["key_name"] == f"sk-...{key[-4:]}"
    assert made["token"] != key and key not in str({k: v for k, v in made.items() if k != "key"})

    # The store keeps only the hash: the plaintext appears nowhere in the database.
    store = open_store(pg_database)
    try:
        with store.engine.connect() as conn:
            stored = [dict(r._mapping) for r in conn.execute(sa.select(tables.virtual_keys))]
    finally:
        store.close()
    assert len(stored) == 1 and stored[0]["key_hash"] == made["token"]
    assert key not in repr(stored)

    # The key works on the other replica too (shared store), attributed to its team.
    status, body, headers = b.client.post("/v1/chat/completions", chat_body(content="one two three", max_tokens=4),
                                          token=key)
    assert status == 200, body
    status, body, _ = a.client.post("/v1/chat/completions", chat_body(content="four five", max_tokens=2), token=key)
    assert status == 200, body
    expected = cost(3, 4) + cost(2, 2)

    team_info = wait_for_spend(a.client, "/team/info?team_id=kt-team", admin_token, "team_info", 2)
    assert (team_info["spend_nanos"], team_info["requests"]) == (expected, 2)
    assert team_info["spend"] == float(Decimal(expected) / 10**9)

    status, info, _ = b.client.get(f"/key/info?key={key}", token=admin_token)
    assert status == 200, info
    assert info["key"] == made["token"]
    details = info["info"]
    assert (details["spend_nanos"], details["requests"]) == (expected, 2)
    assert (details["team_id"], details["key_alias"], details["models"]) == ("kt-team", "kt-ci", ["gpt-4o-mini"])
    status, logs, _ = a.client.get("/spend/logs?team_id=kt-team", token=admin_token)
    assert status == 200 and len(logs) == 2, logs
    assert {row["key_hash"] for row in logs} == {made["token"]}
    assert all(row["user_id"] is None and row["team_id"] == "kt-team" for row in logs)

    # The key may call what its model list names, nothing else.
    assert_error(a.client.post("/v1/chat/completions", chat_body("azure-gpt-4o"), token=key), 403, "model_not_allowed")
    # A key is a team credential: management routes are not for it.
    assert_error(a.client.post("/key/generate", {"team_id": "kt-team"}, token=key), 403, "route_not_allowed")
    # ...but it may read its own key's info (an info route).
    status, own, _ = a.client.get(f"/key/info?key={key}", token=key)
    assert status == 200 and own["key"] == made["token"], own

    # Delete through A: A refuses it at once, B once its short key cache expires.
    status, body, _ = a.client.post("/key/delete", {"keys": [key]}, token=admin_token)
    assert status == 200 and body == {"deleted_keys": 1}, body
    assert_error(a.client.post("/v1/chat/completions", chat_body(), token=key), 401, "invalid_key")
    deadline = time.monotonic() + 5
    while b.client.get("/v1/models", token=key)[0] == 200:
        assert time.monotonic() < deadline, "replica B still accepts the deleted key after 5 s"
        time.sleep(0.1)
    assert_error(b.client.post("/v1/chat/completions", chat_body(), token=key), 401, "invalid_key")
    assert_error(a.client.get(f"/key/info?key={key}", token=admin_token), 404, "not_found")
    # The spend it made stays with the team.
    status, body, _ = b.client.get("/team/info?team_id=kt-team", token=admin_token)
    assert status == 200 and body["team_info"]["spend_nanos"] == expected, body


def test_user_key_and_expiry(start_replicas, idp, admin_token):
    (a,) = start_replicas(1)
    status, made, _ = a.client.post("/key/generate", {"user_id": "kt-user"}, token=admin_token)
    assert status == 200, made
    assert (made["user_id"], made["team_id"], made["models"]) == ("kt-user", None, [])
    key = made["key"]

    status, body, _ = a.client.post("/v1/chat/completions", chat_body(content="a b c d e", max_tokens=3), token=key)
    assert status == 200, body
    user_info = wait_for_spend(a.client, "/user/info?user_id=kt-user", admin_token, "user_info", 1)
    assert (user_info["user_id"], user_info["spend_nanos"], user_info["requests"]) == ("kt-user", cost(5, 3), 1)
    # An internal-user key may use any model when it has no model list.
    status, body, _ = a.client.post("/v1/chat/completions", chat_body("azure-gpt-4o"), token=key)
    assert status == 200, body

    # A key with a duration stops working once it has passed.
    status, short, _ = a.client.post("/key/generate", {"user_id": "kt-user", "duration": "1s"}, token=admin_token)
    assert status == 200 and short["expires"] is not None, short
    status, body, _ = a.client.get("/v1/models", token=short["key"])
    assert status == 200, body
    deadline = time.monotonic() + 10
    while (answer := a.client.get("/v1/models", token=short["key"]))[0] == 200:  # until its second has passed
        assert time.monotonic() < deadline, "the key did not expire"
        time.sleep(0.05)
    assert_error(answer, 401, "expired_key")
    status, body, _ = a.client.get("/v1/models", token=key)  # the other key of the user is unaffected
    assert status == 200, body

    # A key nobody issued, and one that is not even shaped like ours.
    assert_error(a.client.get("/v1/models", token="sk-" + "x" * 43), 401, "invalid_key")
    assert_error(a.client.get("/v1/models", token="sk-"), 401, "invalid_key")

    # A team member (JWT) reads its own team's key but not another team's.
    status, team, _ = a.client.post("/team/new", {"team_id": "kt-t2"}, token=admin_token)
    assert status == 200, team
    status, other, _ = a.client.post("/key/generate", {"team_id": "kt-t2"}, token=admin_token)
    assert status == 200, other
    member = team_token(idp, "kt-t2", "kt-member")
    status, body, _ = a.client.get(f"/key/info?key={other['key']}", token=member)
    assert status == 200 and body["info"]["team_id"] == "kt-t2", body
    assert_error(a.client.get(f"/key/info?key={key}", token=member), 403, "not_owner")


def test_team_key_is_held_to_the_team_models(start_replicas, admin_token, pg_database):
    (a,) = start_replicas(1)
    status, team, _ = a.client.post("/team/new", {"team_id": "kt-narrow", "models": ["gpt-4o-mini"]},
                                    token=admin_token)
    assert status == 200 and team["models"] == ["gpt-4o-mini"], team

    # A key of the team that names no models gets the team's, and is held to them.
    status, made, _ = a.client.post("/key/generate", {"team_id": "kt-narrow"}, token=admin_token)
    assert status == 200 and made["models"] == ["gpt-4o-mini"], made
    assert a.client.post("/v1/chat/completions", chat_body("gpt-4o-mini"), token=made["key"])[0] == 200
    assert_error(a.client.post("/v1/chat/completions", chat_body("azure-gpt-4o"), token=made["key"]),
                 403, "model_not_allowed")

    # A key may not be given more than its team has; nothing is written for the refused one.
    before = key_count(pg_database)
    assert_error(a.client.post("/key/generate", {"team_id": "kt-narrow", "models": ["azure-gpt-4o"]},
                               token=admin_token), 400, "model_not_in_team")
    assert key_count(pg_database) == before == 1
