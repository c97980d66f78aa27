"""Many teams per token, end to end (issue 12): `groups` tokens, the x-litellm-team-id header,
team model access for tokens and virtual keys, aliases, default teams and upserts, through the
real enforcer (gunicorn), OPA with the compiled bundle, the IdP stand-in and the store.

Two configs: examples/regate.yaml (team_id claim, then `groups`; the module's `enforcer`), and
an enforced one (`enforced_stack`: the LiteLLM docs' team settings plus aliases and upserts).
"""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest

from .conftest import MASTER_KEY, assert_openai_error, chat_body, config_stack, enforcer_env


def reason(headers) -> str | None:
    return headers.get("X-Regate-Reason")


def groups_token(idp, user: str, *teams: str, **claims) -> str:
    return idp.mint({"sub": user, "email": f"{user}@example.com", "groups": list(teams), **claims})


def spend_teams(client, admin_token: str, user: str, count: int, timeout: float = 30.0) -> list[str]:
    """The team of each of `user`'s spend records, once the spend writer has written `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        status, rows, _ = client.get(f"/spend/logs?user_id={user}", token=admin_token)
        assert status == 200, rows
        if len(rows) >= count or time.monotonic() > deadline:
            return sorted(row["team_id"] for row in rows)
        time.sleep(0.1)


def create_team(client, team_id: str, **fields) -> dict:
    status, body, _ = client.post("/team/new", {"team_id": team_id, **fields}, token=MASTER_KEY)
    assert status == 200, body
    return body


# -- examples/regate.yaml ------------------------------------------------------------------------
def test_a_groups_token_runs_as_the_team_its_header_selects(client, idp, admin_token, fresh_upstream):
    create_team(client, "mt-b", team_alias="Multi B")
    token = groups_token(idp, "mt-user", "mt-a", "mt-b")
    assert client.post("/v1/chat/completions", chat_body(), token=token)[0] == 200  # the first team: mt-a
    status, body, _ = client.post("/v1/chat/completions", chat_body(), token=token,
                                  headers={"x-litellm-team-id": "mt-b"})
    assert status == 200, body
    status, body, _ = client.post("/v1/chat/completions", chat_body(), token=token,
                                  headers={"x-litellm-team-id": "Multi B"})  # by its unique alias
    assert status == 200, body
    assert spend_teams(client, admin_token, "mt-user", 3) == ["mt-a", "mt-b", "mt-b"]  # spend goes to the selected team

    status, body, headers = client.post("/v1/chat/completions", chat_body(), token=token,
                                        headers={"x-litellm-team-id": "mt-c"})
    assert status == 403 and reason(headers) == "team_not_granted", body
    assert assert_openai_error(body, 403) == (
        "x-litellm-team-id mt-c is not a team of this credential (granted: mt-a, mt-b)")
    assert len(fresh_upstream.requests) == 3


def test_the_selected_team_is_the_one_that_management_routes_see(client, idp):
    token = groups_token(idp, "mt-info", "mt-i1", "mt-i2")
    status, body, _ = client.get("/team/info", token=token, headers={"x-litellm-team-id": "mt-i2"})
    assert status == 200 and body["team_id"] == "mt-i2", body
    status, body, headers = client.get("/team/info?team_id=mt-i2", token=token)  # runs as mt-i1: not its team
    assert status == 403 and reason(headers) == "not_owner", body


def test_a_blocked_team_does_not_block_the_tokens_other_teams(client, idp, admin_token):
    token = groups_token(idp, "mt-blocks", "mt-blocked", "mt-open")
    assert client.post("/team/block", {"team_id": "mt-blocked"}, token=admin_token)[0] == 200
    try:
        status, body, _ = client.post("/v1/chat/completions", chat_body(), token=token)
        assert status == 200, body  # runs as mt-open
        status, body, headers = client.post("/v1/chat/completions", chat_body(), token=token,
                                            headers={"x-litellm-team-id": "mt-blocked"})
        assert status == 403 and reason(headers) == "team_blocked", body
    finally:
        assert client.post("/team/unblock", {"team_id": "mt-blocked"}, token=admin_token)[0] == 200
    assert spend_teams(client, admin_token, "mt-blocks", 1) == ["mt-open"]


def test_the_first_team_that_may_use_the_model_is_chosen(client, idp, admin_token):
    create_team(client, "mt-mini", models=["gpt-4o-mini"])
    create_team(client, "mt-azure", models=["azure-gpt-4o"])
    token = groups_token(idp, "mt-models", "mt-mini", "mt-azure")
    assert client.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=token)[0] == 200
    assert client.post("/v1/chat/completions", chat_body(model="gpt-4o-mini"), token=token)[0] == 200
    assert spend_teams(client, admin_token, "mt-models", 2) == ["mt-azure", "mt-mini"]
    status, body, headers = client.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=token,
                                        headers={"x-litellm-team-id": "mt-mini"})
    assert status == 403 and reason(headers) == "model_not_allowed", body
    assert assert_openai_error(body, 403) == "team mt-mini may not use model azure-gpt-4o"


@pytest.mark.parametrize("groups, message", [
    ("mt-a", "malformed claims: groups"),
    (["mt-a", 7], "malformed claims: groups"),
    (["mt-a", ""], "malformed claims: groups"),
    ([f"t{i}" for i in range(101)], "malformed claims: groups (more than 100 teams)"),
])
def test_malformed_team_lists_are_refused(client, idp, fresh_upstream, groups, message):
    token = idp.mint({"sub": "mt-bad", "email": "mt-bad@example.com", "groups": groups})
    status, body, headers = client.post("/v1/chat/completions", chat_body(), token=token)
    assert status == 401 and reason(headers) == "invalid_claims", body
    assert assert_openai_error(body, 401) == message
    assert fresh_upstream.requests == []


@pytest.mark.parametrize("headers, status, reason_code, message", [
    ([("x-litellm-team-id", "t" * 257)], 400, "invalid_team_header",
     "x-litellm-team-id must be a team id or alias: 1 to 256 characters, no control characters"),
    ([("x-litellm-team-id", "")], 400, "invalid_team_header",
     "x-litellm-team-id must be a team id or alias: 1 to 256 characters, no control characters"),
    # Sent twice, it reaches regate as one comma-joined value, which names no team.
    ([("x-litellm-team-id", "mt-a"), ("x-litellm-team-id", "mt-b")], 403, "team_not_granted",
     "x-litellm-team-id mt-a,mt-b is not a team of this credential (granted: mt-a, mt-b)"),
])
def test_malformed_team_headers_are_refused(enforcer, idp, headers, status, reason_code, message):
    url = urlsplit(enforcer.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.putrequest("GET", "/v1/models")
        conn.putheader("Authorization", f"Bearer {groups_token(idp, 'mt-hdr', 'mt-a', 'mt-b')}")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == status and resp.getheader("X-Regate-Reason") == reason_code, body
    assert assert_openai_error(body, status) == message


def test_the_header_with_the_master_key_or_another_teams_key_is_refused(client, idp, admin_token):
    status, body, headers = client.get("/v1/models", token=MASTER_KEY, headers={"x-litellm-team-id": "mt-a"})
    assert status == 403 and reason(headers) == "team_not_granted", body
    assert "(granted: none)" in assert_openai_error(body, 403)
    create_team(client, "mt-keyed")
    status, made, _ = client.post("/key/generate", {"team_id": "mt-keyed"}, token=admin_token)
    assert status == 200, made
    assert client.get("/v1/models", token=made["key"], headers={"x-litellm-team-id": "mt-keyed"})[0] == 200
    status, body, headers = client.get("/v1/models", token=made["key"], headers={"x-litellm-team-id": "mt-other"})
    assert status == 403 and reason(headers) == "team_not_granted", body


def test_a_teams_older_keys_are_held_to_its_new_models(client, admin_token, fresh_upstream):
    """Issue 11 item 5: /team/update models applies to the keys the team already has, as in LiteLLM."""
    create_team(client, "mt-older")
    status, made, _ = client.post("/key/generate", {"team_id": "mt-older"}, token=admin_token)
    assert status == 200 and made["models"] == [], made
    assert client.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=made["key"])[0] == 200
    status, body, _ = client.post("/team/update", {"team_id": "mt-older", "models": ["gpt-4o-mini"]}, token=admin_token)
    assert status == 200, body
    status, body, headers = client.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=made["key"])
    assert status == 403 and reason(headers) == "model_not_allowed", body
    assert assert_openai_error(body, 403) == "team mt-older may not use model azure-gpt-4o"
    assert client.post("/v1/chat/completions", chat_body(model="gpt-4o-mini"), token=made["key"])[0] == 200
    assert len(fresh_upstream.requests) == 2  # the refused call never reached the upstream


# -- enforced team model access, aliases, upserts --------------------------------------------------
ENFORCED_CONFIG = """\
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: os.environ/OPENAI_API_BASE, api_key: os.environ/OPENAI_API_KEY}
  - model_name: azure-gpt-4o
    litellm_params: {model: azure/gpt-4o-prod, api_base: os.environ/AZURE_API_BASE, api_key: os.environ/AZURE_API_KEY,
                     api_version: "2024-10-21"}
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  enable_jwt_auth: true
  litellm_jwtauth:
    user_id_jwt_field: sub
    user_id_upsert: true
    team_id_jwt_field: tenant
    team_alias_jwt_field: tenant_name
    team_ids_jwt_field: groups
    org_id_jwt_field: org_id
    org_alias_jwt_field: org_name
    team_id_upsert: true
    enforce_team_based_model_access: true
"""


@pytest.fixture(scope="module")
def enforced_stack(opa_bin, idp, upstream, tmp_path_factory):
    work = tmp_path_factory.mktemp("teams-enforced")
    config = work / "teams.yaml"
    config.write_text(ENFORCED_CONFIG)
    with config_stack(opa_bin, config, enforcer_env(idp, upstream), work) as stack_client:
        yield stack_client


def test_groups_must_be_teams_in_the_store(enforced_stack, idp, fresh_upstream):
    token = groups_token(idp, "en-user", "en-a", "en-b")
    status, body, headers = enforced_stack.post("/v1/chat/completions", chat_body(), token=token)
    assert status == 403 and reason(headers) == "team_not_found", body
    assert assert_openai_error(body, 403) == "team en-a does not exist (create it with /team/new)"
    create_team(enforced_stack, "en-b", models=["gpt-4o-mini"])
    assert enforced_stack.post("/v1/chat/completions", chat_body(), token=token)[0] == 200  # runs as en-b
    # No team may use this model: the request is judged as the first team (not in the store).
    status, body, headers = enforced_stack.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=token)
    assert status == 403 and reason(headers) == "team_not_found", body
    status, body, headers = enforced_stack.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=token,
                                                headers={"x-litellm-team-id": "en-b"})
    assert status == 403 and reason(headers) == "model_not_allowed", body
    status, body, headers = enforced_stack.get("/v1/models", token=idp.mint({"sub": "en-loner"}))
    assert status == 403 and reason(headers) == "team_not_found", body  # a token with no team at all
    assert len(fresh_upstream.requests) == 1


def test_a_team_token_creates_its_team_but_an_admin_token_never_does(enforced_stack, idp):
    status, body, _ = enforced_stack.get("/team/info?team_id=en-upserted", token=MASTER_KEY)
    assert status == 404, body
    token = idp.mint({"sub": "en-up", "tenant": "en-upserted"})
    assert enforced_stack.post("/v1/chat/completions", chat_body(), token=token)[0] == 200
    status, body, _ = enforced_stack.get("/team/info?team_id=en-upserted", token=MASTER_KEY)
    assert status == 200 and body["team_info"]["models"] == [] and body["team_info"]["created_at"], body

    admin = idp.mint({"scope": "litellm_proxy_admin", "sub": "en-admin", "tenant": "en-admin-team"})
    assert enforced_stack.post("/team/new", {"team_id": "en-made-by-admin"}, token=admin)[0] == 200
    status, body, _ = enforced_stack.get("/team/info?team_id=en-admin-team", token=MASTER_KEY)
    assert status == 404, body  # the admin token's team claim created nothing


def test_aliases_resolve_through_the_store(enforced_stack, idp, admin_token):
    create_team(enforced_stack, "en-blue", team_alias="Blue")
    status, body, _ = enforced_stack.post("/organization/new", {"organization_id": "org-acme", "organization_alias": "Acme"},
                                          token=MASTER_KEY)
    assert status == 200 and body["organization_alias"] == "Acme", body
    token = idp.mint({"sub": "en-alias", "tenant_name": "Blue", "org_name": "Acme"})
    assert enforced_stack.post("/v1/chat/completions", chat_body(), token=token)[0] == 200
    deadline = time.monotonic() + 30
    while True:
        status, rows, _ = enforced_stack.get("/spend/logs?user_id=en-alias", token=MASTER_KEY)
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(r["team_id"], r["organization_id"]) for r in rows] == [("en-blue", "org-acme")]

    create_team(enforced_stack, "en-blue-2", team_alias="Blue")  # now two teams share the alias
    status, body, headers = enforced_stack.post("/v1/chat/completions", chat_body(), token=token)
    assert status == 403 and reason(headers) == "team_not_found", body  # an ambiguous alias names no team
