"""Bad input to every management endpoint: a 4xx in the OpenAI error shape, and the store unchanged.

One enforcer (gunicorn) with its OPA sidecar on a fresh PostgreSQL database. The whole
database (every table of the store) is snapshotted before the bad requests and compared
after them: a refused request writes nothing, not even a side record.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from regate.enforcer import schema as tables

from .conftest import open_store, team_token

MAX_MANAGEMENT_BODY = 64 * 1024
UNKNOWN_KEY = "sk-" + "u" * 43

POST_ENDPOINTS = ("/key/generate", "/key/update", "/key/delete", "/team/new", "/team/update", "/team/block",
                  "/team/unblock", "/user/new", "/user/update", "/customer/new")
BAD_LIMITS = ({"max_budget": -1}, {"max_budget": "10"}, {"max_budget": True}, {"budget_duration": "30y"},
              {"budget_duration": "1.5h"}, {"budget_duration": 30}, {"rpm_limit": -1}, {"tpm_limit": 1.5},
              {"max_parallel_requests": "3"})


def snapshot(database_url: str) -> dict[str, list[tuple]]:
    """Every row of every store table, in a stable order."""
    store = open_store(database_url)
    try:
        with store.engine.connect() as conn:
            return {table.name: sorted(tuple(map(repr, row)) for row in conn.execute(sa.select(table)))
                    for table in tables.metadata.sorted_tables}
    finally:
        store.close()


@pytest.fixture
def world(start_replicas, idp, admin_token, pg_database):
    """A replica with two teams, a key for each, and a user; every caller has made a request once."""
    (replica,) = start_replicas(1)
    client = replica.client
    keys = {}
    for team in ("mi-team", "mi-other"):
        status, body, _ = client.post("/team/new", {"team_id": team}, token=admin_token)
        assert status == 200, body
        status, body, _ = client.post("/key/generate", {"team_id": team, "key_alias": f"{team}-key"},
                                      token=admin_token)
        assert status == 200, body
        keys[team] = body["key"]
    status, body, _ = client.post("/user/new", {"user_id": "mi-user", "user_email": "mi-user@example.com"},
                                  token=admin_token)
    assert status == 200, body
    member = team_token(idp, "mi-team", "mi-member")
    loner = idp.mint({"sub": "mi-loner", "email": "mi-loner@example.com"})  # internal_user: no team
    for token in (member, loner, keys["mi-team"]):  # first use upserts the JWT users: do it before the snapshot
        status, body, _ = client.get("/v1/models", token=token)
        assert status == 200, body
    return {"client": client, "keys": keys, "member": member, "loner": loner, "admin": admin_token}


def assert_openai_error(status: int, body, headers, expected: int, secrets: tuple[str, ...] = ()) -> None:
    assert status == expected, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["code"] == str(expected), error
    assert headers.get("Content-Type", "").startswith("application/json")
    for secret in secrets:
        assert secret not in json.dumps(body), "an error message repeats a key"


def json_cases() -> list[tuple[str, object, int]]:
    """(path, JSON body, expected status) for bodies that are JSON but wrong."""
    cases = []
    for path in POST_ENDPOINTS:
        cases += [(path, [], 400), (path, None, 400), (path, "team_id", 400), (path, 7, 400),
                  (path, {"bogus_field": 1}, 400)]
    cases += [
        # /key/generate
        ("/key/generate", {"team_id": 5}, 400),
        ("/key/generate", {"team_id": ["mi-team"]}, 400),
        ("/key/generate", {"team_id": True}, 400),
        ("/key/generate", {"team_id": ""}, 400),
        ("/key/generate", {"team_id": "no-such-team"}, 400),
        ("/key/generate", {"team_id": "no-such-team", "user_id": "mi-new-user-1"}, 400),
        ("/key/generate", {"user_id": "bad\u0000id"}, 400),
        ("/key/generate", {"user_id": "u" * 257}, 400),
        ("/key/generate", {"user_id": {"id": "x"}}, 400),
        ("/key/generate", {"team_id": "mi-team", "models": "gpt-4o-mini"}, 400),
        ("/key/generate", {"team_id": "mi-team", "models": [1]}, 400),
        ("/key/generate", {"team_id": "mi-team", "models": [""]}, 400),
        ("/key/generate", {"team_id": "mi-team", "models": ["no-such-model"]}, 400),
        ("/key/generate", {"team_id": "mi-team", "duration": 30}, 400),
        ("/key/generate", {"team_id": "mi-team", "duration": "1 week"}, 400),
        ("/key/generate", {"team_id": "mi-team", "duration": "-1s"}, 400),
        ("/key/generate", {"team_id": "mi-team", "duration": "1.5h"}, 400),
        ("/key/generate", {"team_id": "mi-team", "duration": "0s"}, 400),
        ("/key/generate", {"team_id": "mi-team", "duration": "30y"}, 400),
        ("/key/generate", {"team_id": "mi-team", "key_alias": 3}, 400),
        *[("/key/generate", {"team_id": "mi-team", **bad}, 400) for bad in BAD_LIMITS],
        # /key/update
        ("/key/update", {}, 400),
        ("/key/update", {"key": UNKNOWN_KEY, "max_budget": 1}, 404),
        ("/key/update", {"key": UNKNOWN_KEY, "models": ["gpt-4o-mini"]}, 400),
        ("/key/generate", {"team_id": "mi-team", "key_alias": "mi-team-key"}, 409),  # alias taken
        ("/key/generate", {"user_id": "mi-new-user-2", "key_alias": "mi-team-key"}, 409),
        # /key/delete
        ("/key/delete", {}, 400),
        ("/key/delete", {"keys": []}, 400),
        ("/key/delete", {"keys": "sk-abc"}, 400),
        ("/key/delete", {"keys": [1]}, 400),
        ("/key/delete", {"keys": [""]}, 400),
        ("/key/delete", {"key_aliases": "mi-team-key"}, 400),
        ("/key/delete", {"keys": [UNKNOWN_KEY]}, 404),
        ("/key/delete", {"key_aliases": ["no-such-alias"]}, 404),
        # /team/new
        ("/team/new", {"team_id": 1}, 400),
        ("/team/new", {"team_id": ""}, 400),
        ("/team/new", {"team_id": "mi-team"}, 409),
        ("/team/new", {"team_id": "mi-new-team", "models": "gpt-4o-mini"}, 400),
        ("/team/new", {"team_id": "mi-new-team", "team_alias": {"a": 1}}, 400),
        ("/team/new", {"team_id": "mi-new-team", "organization_id": 9}, 400),
        *[("/team/new", {"team_id": "mi-new-team", **bad}, 400) for bad in BAD_LIMITS],
        # /team/update
        ("/team/update", {}, 400),
        ("/team/update", {"models": ["gpt-4o-mini"]}, 400),
        ("/team/update", {"team_id": 1}, 400),
        ("/team/update", {"team_id": ""}, 400),
        ("/team/update", {"team_id": "mi-team", "models": "gpt-4o-mini"}, 400),
        ("/team/update", {"team_id": "mi-team", "models": [1]}, 400),
        ("/team/update", {"team_id": "mi-team", "models": [""]}, 400),
        ("/team/update", {"team_id": "mi-team", "team_alias": ""}, 400),
        ("/team/update", {"team_id": "mi-team", "organization_id": ["o"]}, 400),
        ("/team/update", {"team_id": "mi-team", "blocked": True}, 400),  # blocks go through /team/block
        *[("/team/update", {"team_id": "mi-team", **bad}, 400) for bad in BAD_LIMITS],
        ("/team/update", {"team_id": "no-such-team", "models": ["gpt-4o-mini"]}, 404),
        # /team/block, /team/unblock
        ("/team/block", {}, 400),
        ("/team/block", {"team_id": None}, 400),
        ("/team/block", {"team_id": 1}, 400),
        ("/team/block", {"team_id": ""}, 400),
        ("/team/block", {"team_id": ["mi-team"]}, 400),
        ("/team/block", {"team_id": "mi-team", "blocked": True}, 400),
        ("/team/unblock", {}, 400),
        ("/team/unblock", {"team_id": False}, 400),
        ("/team/unblock", {"team_ids": ["mi-team"]}, 400),
        # /user/new
        ("/user/new", {"user_id": 1}, 400),
        ("/user/new", {"user_id": ""}, 400),
        ("/user/new", {"user_id": "mi-user"}, 409),
        ("/user/new", {"user_id": "mi-new-user-3", "user_email": "no-at-sign"}, 400),
        ("/user/new", {"user_id": "mi-new-user-3", "user_email": "a@b@example.com"}, 400),
        ("/user/new", {"user_id": "mi-new-user-3", "user_email": 5}, 400),
        ("/user/new", {"user_id": "mi-new-user-3", "user_role": "proxy_admin"}, 400),
        *[("/user/new", {"user_id": "mi-new-user-3", **bad}, 400) for bad in BAD_LIMITS],
        # /user/update
        ("/user/update", {}, 400),
        ("/user/update", {"user_id": "no-such-user", "max_budget": 1}, 404),
        *[("/user/update", {"user_id": "mi-user", **bad}, 400) for bad in BAD_LIMITS],
        # /customer/new
        ("/customer/new", {}, 400),
        ("/customer/new", {"user_id": "mi-customer", "blocked": True}, 400),
        *[("/customer/new", {"user_id": "mi-customer", **bad}, 400) for bad in BAD_LIMITS],
    ]
    return cases


def raw_cases() -> list[tuple[str, bytes, dict, int]]:
    """(path, body bytes, headers, expected status): not JSON, wrong Content-Type, oversized."""
    cases = []
    oversized = json.dumps({"team_id": "mi-big", "team_alias": "a" * (MAX_MANAGEMENT_BODY + 10)}).encode()
    valid = {"/key/generate": {"team_id": "mi-team"}, "/key/delete": {"keys": [UNKNOWN_KEY]},
             "/team/new": {"team_id": "mi-ct-team"}, "/team/update": {"team_id": "mi-team", "models": []},
             "/team/block": {"team_id": "mi-team"},
             "/team/unblock": {"team_id": "mi-team"}, "/user/new": {"user_id": "mi-ct-user"},
             "/key/update": {"key": UNKNOWN_KEY, "rpm_limit": 1}, "/user/update": {"user_id": "mi-user", "rpm_limit": 1},
             "/customer/new": {"user_id": "mi-ct-customer"}}
    for path in POST_ENDPOINTS:
        json_type = {"Content-Type": "application/json"}
        cases += [
            (path, b"{not json", json_type, 400),
            (path, b"", json_type, 400),
            (path, b"\xff\xfe{}", json_type, 400),
            (path, b'{"team_id": "a", "team_id": ', json_type, 400),
            # A valid body under another Content-Type is not read as JSON (no CSRF-able form posts).
            (path, json.dumps(valid[path]).encode(), {"Content-Type": "text/plain"}, 400),
            (path, json.dumps(valid[path]).encode(), {"Content-Type": "application/x-www-form-urlencoded"}, 400),
            (path, json.dumps(valid[path]).encode(), {}, 400),
            (path, oversized, json_type, 413),
        ]
    return cases


def query_cases() -> list[tuple[str, str, int]]:
    """(method, path with query, expected status) for the GET endpoints, and wrong methods."""
    return [
        ("GET", "/key/info", 400),
        ("GET", f"/key/info?key={UNKNOWN_KEY}", 404),
        ("GET", "/key/info?key=not-a-key", 404),
        ("GET", "/team/info", 400),  # an admin belongs to no team: it must name one
        ("GET", "/team/info?team_id=", 400),
        ("GET", "/team/info?team_id=no-such-team", 404),
        ("GET", "/user/info?user_id=", 400),
        ("GET", "/user/info?user_id=no-such-user", 404),
        ("GET", "/customer/info", 400),
        ("GET", "/customer/info?end_user_id=no-such-customer", 404),
        ("GET", "/spend/logs?limit=abc", 400),
        ("GET", "/spend/logs?limit=0", 400),
        ("GET", "/spend/logs?limit=10001", 400),
        ("GET", "/spend/logs?start_date=yesterday", 400),
        ("GET", "/spend/logs?end_date=2025-13-45", 400),
        ("GET", "/spend/logs?team_id=", 400),
        ("POST", "/global/spend", 405),
        ("GET", "/key/generate", 405),
        ("GET", "/team/block", 405),
        ("DELETE", "/team/new", 405),
        ("PUT", "/user/new", 405),
        ("POST", "/key/info", 405),
    ]


def test_bad_input_to_every_management_endpoint_changes_nothing(world, pg_database):
    client, admin, keys = world["client"], world["admin"], world["keys"]
    before = snapshot(pg_database)
    secrets = tuple(keys.values())
    failures = []

    def check(label, answer, expected):
        status, body, headers = answer
        try:
            assert_openai_error(status, body, headers, expected, secrets)
        except AssertionError as e:
            failures.append(f"{label}: {e}")

    for path, body, expected in json_cases():
        raw = json.dumps(body).encode()
        check(f"POST {path} {raw[:80]!r}", client.request("POST", path, token=admin, body=raw,
                                                          headers={"Content-Type": "application/json"}), expected)
    for path, raw, headers, expected in raw_cases():
        check(f"POST {path} {raw[:40]!r} {headers}", client.request("POST", path, token=admin, body=raw,
                                                                    headers=headers), expected)
    for method, path, expected in query_cases():
        check(f"{method} {path}", client.request(method, path, token=admin), expected)
    assert not failures, "\n".join(failures)
    assert snapshot(pg_database) == before


def test_oversized_chunked_body_is_refused(world, pg_database):
    """Without a Content-Length the limit still holds: the body is cut off at 64 KiB."""
    client, admin = world["client"], world["admin"]
    before = snapshot(pg_database)
    piece = b"a" * 8192
    body = [b'{"team_id": "mi-chunked", "team_alias": "'] + [piece] * 10 + [b'"}']
    resp = client.http.urlopen("POST", client.base_url + "/team/new", body=iter(body), chunked=True,
                               headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    data = json.loads(resp.data)
    assert_openai_error(resp.status, data, resp.headers, 413)
    assert snapshot(pg_database) == before


def test_callers_act_only_on_their_own_team_user_and_keys(world, pg_database):
    client, keys = world["client"], world["keys"]
    member, loner, team_key = world["member"], world["loner"], keys["mi-team"]
    before = snapshot(pg_database)
    other_key = keys["mi-other"]
    denied = [
        # (token, method, path, body, status, reason)
        (member, "GET", "/team/info?team_id=mi-other", None, 403, "not_owner"),
        (member, "GET", f"/key/info?key={other_key}", None, 403, "not_owner"),
        (member, "GET", "/spend/logs?team_id=mi-other", None, 403, "not_owner"),
        (member, "GET", "/user/info?user_id=mi-user", None, 403, "not_owner"),
        (member, "POST", "/team/block", {"team_id": "mi-other"}, 403, "route_not_allowed"),
        (member, "POST", "/team/unblock", {"team_id": "mi-team"}, 403, "route_not_allowed"),
        (member, "POST", "/key/generate", {"team_id": "mi-other"}, 403, "route_not_allowed"),
        (member, "POST", "/key/delete", {"keys": [other_key]}, 403, "route_not_allowed"),
        (member, "POST", "/team/new", {"team_id": "mi-member-team"}, 403, "route_not_allowed"),
        (member, "POST", "/team/update", {"team_id": "mi-team", "models": []}, 403, "route_not_allowed"),
        (team_key, "POST", "/team/update", {"team_id": "mi-team", "models": []}, 403, "route_not_allowed"),
        (member, "POST", "/user/new", {"user_id": "mi-member-user"}, 403, "route_not_allowed"),
        (member, "GET", "/global/spend", None, 403, "route_not_allowed"),
        (team_key, "GET", "/team/info?team_id=mi-other", None, 403, "not_owner"),
        (team_key, "GET", f"/key/info?key={other_key}", None, 403, "not_owner"),
        (team_key, "POST", "/key/delete", {"keys": [other_key]}, 403, "route_not_allowed"),
        (loner, "GET", "/user/info?user_id=mi-user", None, 403, "not_owner"),
        (loner, "GET", "/team/info?team_id=mi-team", None, 403, "not_owner"),
        (loner, "GET", f"/key/info?key={team_key}", None, 403, "not_owner"),
        (loner, "GET", "/spend/logs?team_id=mi-team", None, 403, "route_not_allowed"),
        (None, "GET", "/team/info?team_id=mi-team", None, 401, "missing_credential"),
        (None, "POST", "/team/block", {"team_id": "mi-team"}, 401, "missing_credential"),
    ]
    failures = []
    for token, method, path, body, expected, reason in denied:
        status, answer, headers = client.request(method, path, token=token, json_body=body)
        try:
            assert_openai_error(status, answer, headers, expected, tuple(keys.values()))
            assert headers.get("X-Regate-Reason") == reason, headers.get("X-Regate-Reason")
        except AssertionError as e:
            failures.append(f"{method} {path}: {e}")
    assert not failures, "\n".join(failures)

    # What is theirs they may read.
    for token, path in ((member, "/team/info"), (member, "/team/info?team_id=mi-team"),
                        (member, "/user/info"), (member, f"/key/info?key={team_key}"),
                        (member, "/spend/logs"), (team_key, "/team/info"), (loner, "/user/info")):
        status, answer, _ = client.get(path, token=token)
        assert status == 200, (path, answer)
    assert snapshot(pg_database) == before
