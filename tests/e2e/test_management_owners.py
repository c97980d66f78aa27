"""Management routes granted to teams (LiteLLM documents such configs): a non-admin caller acts
only on its own team, user and keys, on every management endpoint (issue 11, item 3).

Its own config, OPA and enforcer: `team_allowed_routes` and `user_allowed_routes` grant
management_routes and both spend-tracking groups, so the policy lets team and user tokens reach
every management handler and the owner checks are all that stands between one team and another.
A token with several teams (`groups`) is the owner of the one team its request runs as.
The store (SQLite) is snapshotted before the cross-team attempts and compared after them.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from .conftest import assert_openai_error, chat_body, config_stack, enforcer_env, team_token
from .test_state_management_input import snapshot

CONFIG = """\
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: os.environ/OPENAI_API_BASE
      api_key: os.environ/OPENAI_API_KEY
  - model_name: azure-gpt-4o
    litellm_params:
      model: azure/gpt-4o-prod
      api_base: os.environ/AZURE_API_BASE
      api_key: os.environ/AZURE_API_KEY

general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  enable_jwt_auth: true
  litellm_jwtauth:
    admin_allowed_routes: [management_routes, spend_tracking_routes, global_spend_tracking_routes, info_routes]
    team_id_jwt_field: team_id
    team_ids_jwt_field: groups
    team_allowed_routes: [openai_routes, info_routes, management_routes, spend_tracking_routes,
                          global_spend_tracking_routes, /customer/new, /customer/info]
    user_allowed_routes: [openai_routes, info_routes, management_routes, spend_tracking_routes,
                          global_spend_tracking_routes, /customer/new, /customer/info]
    user_id_jwt_field: sub
    user_email_jwt_field: email
    org_id_jwt_field: org_id
    user_id_upsert: true
"""


@pytest.fixture(scope="module")
def stack(opa_bin, idp, upstream, tmp_path_factory):
    work = tmp_path_factory.mktemp("team-management")
    config = work / "team-management.yaml"
    config.write_text(CONFIG)
    database_url = f"sqlite:///{work / 'regate.db'}"
    with config_stack(opa_bin, config, enforcer_env(idp, upstream), work, database_url) as client:
        yield SimpleNamespace(client=client, database_url=database_url)


@pytest.fixture(scope="module")
def world(stack, idp):
    """Teams own-a and own-b (created by an admin, a key each), team own-c blocked by an admin, team
    own-d known only from its tokens; users alice (own-a), bob (own-b), dave (own-c), erin (own-d)
    and carol (no team). Every caller has made a request once (the users upserted)."""
    client = stack.client
    admin = idp.mint({"scope": "litellm_proxy_admin", "sub": "own-admin", "email": "admin@example.com"})
    tokens = {"alice": team_token(idp, "own-a", "alice", org_id="org-a"),
              "bob": team_token(idp, "own-b", "bob", org_id="org-b"),
              "dave": team_token(idp, "own-c", "dave"), "erin": team_token(idp, "own-d", "erin"),
              "carol": idp.mint({"sub": "carol", "email": "carol@example.com"})}
    keys = {}
    for team in ("own-a", "own-b"):
        for path, body in (("/team/new", {"team_id": team}), ("/key/generate", {"team_id": team})):
            status, answer, _ = client.post(path, body, token=admin)
            assert status == 200, answer
        keys[team] = answer["key"]
    callers = (*tokens.values(), *keys.values())
    for token in callers:
        status, body, _ = client.post("/v1/chat/completions", chat_body(), token=token)
        assert status == 200, body
    status, body, _ = client.post("/team/block", {"team_id": "own-c"}, token=admin)
    assert status == 200, body
    deadline = time.monotonic() + 10
    while client.get("/global/spend", token=admin)[1]["requests"] < len(callers):  # the writer batches
        assert time.monotonic() < deadline, "the spend of the calls was not written"
        time.sleep(0.05)
    return SimpleNamespace(admin=admin, keys=keys, **tokens)


def cross_team_attempts(w) -> list[tuple[str, str, str, dict | None]]:
    """(caller, method, path, body): every management endpoint, used on someone else's team, user or key."""
    key_a, key_b = w.keys["own-a"], w.keys["own-b"]
    attempts = []
    for name, token in (("alice", w.alice), ("team-a key", key_a)):
        attempts += [
            (name, token, "POST", "/team/block", {"team_id": "own-b"}),
            (name, token, "POST", "/team/unblock", {"team_id": "own-c"}),  # an admin blocked it
            (name, token, "POST", "/team/new", {"team_id": "own-d", "models": ["azure-gpt-4o"]}),
            (name, token, "POST", "/team/new", {"team_id": "own-new"}),
            (name, token, "POST", "/team/update", {"team_id": "own-b", "models": ["azure-gpt-4o"]}),
            (name, token, "POST", "/user/new", {"user_id": "bob", "user_email": "bob@evil.example"}),
            (name, token, "POST", "/user/new", {"user_id": "own-new-user"}),
            (name, token, "POST", "/key/generate", {"user_id": "bob"}),
            (name, token, "POST", "/key/generate", {"organization_id": "org-b"}),
            (name, token, "POST", "/key/generate", {"team_id": "own-b"}),
            (name, token, "POST", "/key/generate", {"team_id": "own-a", "user_id": "bob"}),
            (name, token, "POST", "/key/delete", {"keys": [key_b]}),
            (name, token, "POST", "/key/update", {"key": key_b, "rpm_limit": 1}),
            (name, token, "POST", "/team/new", {"team_id": "own-new", "max_budget": 1000}),
            (name, token, "POST", "/team/update", {"team_id": "own-a", "max_budget": 1000}),  # its own: admins only
            (name, token, "POST", "/user/update", {"user_id": "bob", "max_budget": 0}),
            (name, token, "POST", "/user/update", {"user_id": "alice", "max_budget": 1000}),  # its own too
            (name, token, "POST", "/customer/new", {"user_id": "own-customer", "max_budget": 1000}),
            (name, token, "GET", "/customer/info?end_user_id=own-customer", None),
            (name, token, "GET", f"/key/info?key={key_b}", None),
            (name, token, "GET", "/team/info?team_id=own-b", None),
            (name, token, "GET", "/user/info?user_id=bob", None),
            (name, token, "GET", "/spend/logs?team_id=own-b", None),
            (name, token, "GET", "/global/spend", None),
        ]
    attempts += [
        ("carol", w.carol, "POST", "/key/generate", {"user_id": "bob"}),
        ("carol", w.carol, "POST", "/key/generate", {"team_id": "own-a"}),
        ("carol", w.carol, "POST", "/key/generate", {"organization_id": "org-a"}),
        ("carol", w.carol, "POST", "/team/block", {"team_id": "own-a"}),
        ("carol", w.carol, "POST", "/user/new", {"user_id": "carol-2"}),
        ("carol", w.carol, "GET", "/spend/logs?user_id=bob", None),
        ("carol", w.carol, "GET", "/global/spend", None),
    ]
    return attempts


def test_no_management_endpoint_lets_a_caller_act_on_another_team(stack, world):
    before = snapshot(stack.database_url)
    wrong = []
    for caller, token, method, path, body in cross_team_attempts(world):
        status, answer, headers = stack.client.request(method, path, token=token, json_body=body)
        if status != 403 or headers.get("X-Regate-Reason") != "not_owner":
            wrong.append((caller, method, path, body, status, answer))
        else:
            assert_openai_error(answer, 403)
    assert wrong == []
    assert snapshot(stack.database_url) == before
    # and nothing changed in effect: own-b, its key and own-d still call every model, own-c is still blocked
    for token in (world.bob, world.keys["own-b"], world.erin):
        status, body, _ = stack.client.post("/v1/chat/completions", chat_body(), token=token)
        assert status == 200, body
    status, body, headers = stack.client.post("/v1/chat/completions", chat_body(), token=world.dave)
    assert (status, headers.get("X-Regate-Reason")) == (403, "team_blocked")


def test_callers_still_act_on_their_own_team_user_and_keys(stack, world):
    client, key_a = stack.client, world.keys["own-a"]
    status, body, _ = client.post("/key/generate", {}, token=world.alice)
    assert status == 200 and (body["team_id"], body["user_id"]) == ("own-a", None), body
    status, body, _ = client.post("/key/generate", {"user_id": "alice", "organization_id": "org-a"},
                                  token=world.alice)
    assert status == 200 and (body["team_id"], body["user_id"], body["organization_id"]) == \
        ("own-a", "alice", "org-a"), body
    status, body, _ = client.post("/key/generate", {"user_id": "carol"}, token=world.carol)
    assert status == 200 and (body["team_id"], body["user_id"]) == (None, "carol"), body
    for token, path in ((world.alice, "/team/info"), (world.alice, "/user/info"), (world.alice, "/spend/logs"),
                        (world.alice, f"/key/info?key={key_a}"), (key_a, "/team/info?team_id=own-a"),
                        (world.carol, "/user/info"), (world.carol, "/spend/logs?user_id=carol")):
        status, body, _ = client.get(path, token=token)
        assert status == 200, (path, body)
    status, body, _ = client.post("/key/delete", {"keys": [key_a]}, token=world.alice)
    assert status == 200 and body == {"deleted_keys": 1}, body


def test_admins_act_on_every_team(stack, world):
    client, admin = stack.client, world.admin
    status, body, _ = client.post("/key/generate", {"team_id": "own-b", "user_id": "bob", "organization_id": "org-x"},
                                  token=admin)
    assert status == 200 and (body["team_id"], body["user_id"], body["organization_id"]) == \
        ("own-b", "bob", "org-x"), body
    for path in ("/team/info?team_id=own-b", "/user/info?user_id=bob", "/spend/logs?team_id=own-b", "/global/spend"):
        status, body, _ = client.get(path, token=admin)
        assert status == 200, (path, body)


def test_a_caller_may_only_lower_the_limits_of_its_own_keys(stack, world):
    """/key/update: a key that could lift its own budget or rate limits would have none; an admin may."""
    client = stack.client
    status, body, _ = client.post("/key/generate", {"team_id": "own-a", "max_budget": 5, "budget_duration": "1d",
                                                    "rpm_limit": 10}, token=world.admin)
    assert status == 200, body
    key = body["key"]

    def limits():
        status, info, _ = client.get(f"/key/info?key={key}", token=world.admin)
        assert status == 200, info
        return {k: info["info"][k] for k in ("max_budget", "budget_duration", "tpm_limit", "rpm_limit")}

    before = limits()
    for change, fields in (({"rpm_limit": 11}, "rpm_limit"), ({"rpm_limit": None}, "rpm_limit"),
                           ({"max_budget": 5.01}, "max_budget"), ({"budget_duration": "1h"}, "budget_duration"),
                           ({"max_budget": None, "rpm_limit": 50}, "max_budget, rpm_limit")):
        for token in (world.alice, key):
            status, body, headers = client.post("/key/update", {"key": key, **change}, token=token)
            assert (status, headers.get("X-Regate-Reason")) == (403, "not_owner"), (change, body)
            assert assert_openai_error(body, 403) == ("only an admin may raise or remove a key's limits or change "
                                                      f"its budget period: {fields}")
    assert limits() == before
    status, body, _ = client.post("/key/update", {"key": key, "max_budget": 4, "rpm_limit": 5, "tpm_limit": 100,
                                                  "budget_duration": "1d"}, token=world.alice)
    assert status == 200, body
    assert limits() == {"max_budget": 4.0, "budget_duration": "1d", "tpm_limit": 100, "rpm_limit": 5}
    status, body, _ = client.post("/key/update", {"key": key, "rpm_limit": 50, "max_budget": None}, token=world.admin)
    assert status == 200 and (body["rpm_limit"], body["max_budget"]) == (50, None), body


def test_a_token_with_several_teams_owns_only_the_team_its_request_runs_as(stack, world, idp):
    """The owner checks use the team the policy selected (x-litellm-team-id, else the first team),
    never any other team of the token."""
    client = stack.client
    for team in ("own-m1", "own-m2"):
        status, body, _ = client.post("/team/new", {"team_id": team}, token=world.admin)
        assert status == 200, body
    multi = idp.mint({"sub": "multi", "email": "multi@example.com", "groups": ["own-m1", "own-m2"]})
    as_m2 = {"x-litellm-team-id": "own-m2"}
    status, body, _ = client.get("/team/info", token=multi, headers=as_m2)  # and the user is upserted
    assert status == 200 and body["team_id"] == "own-m2", body

    def records():  # spend rows are left out: the earlier tests' calls may still be being written
        return {table: rows for table, rows in snapshot(stack.database_url).items() if not table.startswith("spend_")}

    before = records()
    for method, path, body, headers in (
        ("GET", "/team/info?team_id=own-m2", None, None),  # runs as own-m1, its first team
        ("GET", "/team/info?team_id=own-m1", None, as_m2),
        ("GET", "/spend/logs?team_id=own-m1", None, as_m2),
        ("POST", "/key/generate", {"team_id": "own-m1"}, as_m2),
        ("POST", "/key/generate", {"team_id": "own-m2"}, None),
        ("POST", "/team/block", {"team_id": "own-m2"}, as_m2),  # admins only, even for the caller's team
    ):
        status, answer, answer_headers = client.request(method, path, token=multi, json_body=body, headers=headers)
        assert (status, answer_headers.get("X-Regate-Reason")) == (403, "not_owner"), (method, path, headers, answer)
    assert records() == before

    for headers, team in ((as_m2, "own-m2"), (None, "own-m1")):
        status, body, _ = client.post("/key/generate", {}, token=multi, headers=headers)
        assert status == 200 and (body["team_id"], body["user_id"]) == (team, None), body
    status, body, _ = client.get("/spend/logs?team_id=own-m2", token=multi, headers=as_m2)
    assert status == 200, body
