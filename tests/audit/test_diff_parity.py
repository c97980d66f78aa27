"""`regate diff` on crafted pairs of configs for the LiteLLM-parity and budget settings: each
widening and narrowing (a role mapping reaching proxy_admin, a scope granting a model, a prefix
route, wider public routes, an issuer, a custom policy removed, a budget raised or removed), with
the exact cells that change and the exact exit code."""

from __future__ import annotations

import shutil

from regate.compiler import routes

from ..compiler.conftest import ROOT
from .test_diff import ALLOW, deny, diff_json

PARITY = """
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  enable_jwt_auth: true
  litellm_jwtauth:
    admin_allowed_routes: [/key/generate]
    team_id_jwt_field: team_id
    team_allowed_routes: [/v1/chat/completions, /v1/models]
    user_allowed_routes: [/v1/models]
    user_id_jwt_field: sub
    roles_jwt_field: roles
    object_id_jwt_field: oid
    role_mappings:
      - {role: ops, internal_role: team}
"""

TEAM = "team token"
KEY = "virtual key of a team"
OPS = "token with role ops"


def change(principal: str, path: str, before: dict, after: dict, model: str | None = None) -> dict:
    return {"principal": principal, "method": "*", "path": path, "model": model, "before": before, "after": after}


def test_a_role_mapping_that_now_reaches_proxy_admin(pair):
    new = PARITY.replace("{role: ops, internal_role: team}", "{role: ops, internal_role: proxy_admin}")
    code, changes = diff_json(pair, PARITY, new)
    assert code == 1
    assert changes == [
        change(OPS, "/key/generate", deny(403, "route_not_allowed"), ALLOW),
        change(OPS, "/v1/chat/completions", ALLOW, deny(403, "route_not_allowed")),
        change(OPS, "/v1/models", ALLOW, deny(403, "route_not_allowed")),
    ]
    markdown = pair(PARITY, new, "--format", "markdown").out
    assert f"| {OPS} | `/key/generate` | deny route_not_allowed | **allow** |" in markdown


def test_a_scope_mapping_granting_a_new_model(pair):
    scoped = """
model_list:
  - {model_name: gpt-4o, litellm_params: {model: openai/gpt-4o}}
  - {model_name: gpt-4o-mini, litellm_params: {model: openai/gpt-4o-mini}}
""" + PARITY + """    scope_mappings:
      - {scope: chat, models: [gpt-4o-mini]}
    enforce_scope_based_access: true
"""
    new = scoped.replace("{scope: chat, models: [gpt-4o-mini]}", "{scope: chat, models: [gpt-4o-mini, gpt-4o]}")
    code, changes = diff_json(pair, scoped, new)
    assert code == 1
    assert changes == [change("team token with scope chat", "/v1/chat/completions",
                              deny(403, "model_not_allowed"), ALLOW, model="gpt-4o")]
    text = pair(scoped, new).out
    assert "team token with scope chat  /v1/chat/completions model gpt-4o  deny model_not_allowed -> allow" in text


def test_a_prefix_route_covers_a_route_named_elsewhere(pair):
    old = PARITY.replace("admin_allowed_routes: [/key/generate]", "admin_allowed_routes: [/key/generate, /v1/internal/reports]")
    new = old.replace("team_allowed_routes: [/v1/chat/completions, /v1/models]",
                      "team_allowed_routes: [/v1/chat/completions, /v1/models, /v1/internal/*]")
    code, changes = diff_json(pair, old, new)
    assert code == 1
    below = ("/v1/internal/reports", "/v1/internal/regate-any")
    unknown = "team token of a user not in the store"  # still refused, for its user now
    assert changes == [change(who, path, deny(403, "route_not_allowed"), ALLOW) for who in (TEAM, OPS) for path in below] \
        + [change(unknown, path, deny(403, "route_not_allowed", "user_not_found"), deny(401, "user_not_found"))
           for path in below] \
        + [change(KEY, path, deny(403, "route_not_allowed"), ALLOW) for path in below]
    markdown = pair(old, new, "--format", "markdown").out
    assert f"| {TEAM} | `/v1/internal/reports`, `/v1/internal/*` | deny route_not_allowed | **allow** |" in markdown


def test_public_routes_widened(pair):
    new = PARITY.replace("    user_id_jwt_field: sub\n",
                         "    user_id_jwt_field: sub\n    public_allowed_routes: [public_routes, /v1/models]\n")
    code, changes = diff_json(pair, PARITY, new)
    assert code == 1
    # anyone may now call /v1/models: whoever could not, whatever the reason
    assert changes == [
        change("admin token (scope litellm_proxy_admin)", "/v1/models", deny(403, "route_not_allowed"), ALLOW),
        change("team token of a user not in the store", "/v1/models", deny(401, "user_not_found"), ALLOW),
        change("token without a role", "/v1/models", deny(403, "no_role"), ALLOW),
        change("no credential", "/v1/models", deny(401, "missing_credential"), ALLOW),
    ]


def test_an_issuer_added(pair):
    new = PARITY + """    issuers:
      - issuer: https://idp.example.com
        audience: litellm
        jwks_url: https://idp.example.com/jwks
        user_id_jwt_field: uid
"""
    code, changes = diff_json(pair, PARITY, new)
    assert code == 1
    issued = "token of issuer https://idp.example.com"
    assert {c["principal"] for c in changes} == {issued}
    # before: the enforcer refuses a token of an issuer the config does not list; after: a team token
    unknown = deny(401, "unknown_issuer") | {"by": "enforcer"}
    assert all(c["before"] == unknown for c in changes)
    public = set(routes.expand(("public_routes",)).exact)
    after = {c["path"]: c["after"] for c in changes}
    assert after == {"/key/generate": deny(403, "route_not_allowed"), "/v1/chat/completions": ALLOW,
                     "/v1/models": ALLOW, "/regate/not-a-configured-route": deny(403, "route_not_allowed")} \
        | {path: ALLOW for path in public}


def test_a_custom_policy_removed(pair, tmp_path):
    docs = ROOT / "examples" / "litellm-docs"
    for name in ("custom_validate.rego", "custom_validate_test.rego"):
        shutil.copyfile(docs / name, tmp_path / name)
    old = (docs / "custom-validate.yaml").read_text()
    new = old.replace("    custom_policies: [custom_validate.rego, custom_validate_test.rego]", "")
    assert new != old
    code, changes = diff_json(pair, old, new)
    assert code == 1
    # every token the built-in checks let through was refused by the policy's own codes: now allowed
    assert {(c["before"]["reasons"][0], c["after"]["allow"]) for c in changes} == {("claims_not_allowed", True)}
    default = routes.expand(("openai_routes", "info_routes"))
    management = routes.expand(("management_routes",))
    member = set(default.exact + default.templates)
    asked = member | set(management.exact + management.templates)
    widened = {(c["principal"], c["path"]) for c in changes}
    tokens = ("team token", "internal user token", "team token of a user not in the store")
    assert widened == {(who, path) for who in tokens for path in member & asked} | {
        ("admin token (scope litellm_proxy_admin)", path) for path in management.exact + management.templates}


def test_a_budget_raised_removed_and_lowered(pair):
    budgeted = "litellm_settings:\n  max_budget: 10\n" + PARITY
    spender = "team token, proxy spend USD 10"
    over = deny(400, "budget_exceeded")
    for new in (budgeted.replace("max_budget: 10", "max_budget: 20"), PARITY):  # raised, removed
        code, changes = diff_json(pair, budgeted, new)
        assert code == 1
        # only spending routes spend: here /v1/chat/completions
        assert changes == [change(spender, "/v1/chat/completions", over, ALLOW)]
    code, changes = diff_json(pair, budgeted.replace("max_budget: 10", "max_budget: 20"), budgeted)  # lowered
    assert code == 1
    assert changes == [change(spender, "/v1/chat/completions", ALLOW, over)]


def test_an_end_user_budget_removed(pair):
    old = "litellm_settings:\n  max_end_user_budget: 0.5\n" + PARITY.replace(
        "    user_id_jwt_field: sub\n", "    user_id_jwt_field: sub\n    end_user_id_jwt_field: customer\n")
    new = old.replace("litellm_settings:\n  max_end_user_budget: 0.5\n", "")
    code, changes = diff_json(pair, old, new)
    assert code == 1
    assert changes == [change("team token of end user end-user-1, spend USD 0.5", "/v1/chat/completions",
                              deny(400, "budget_exceeded"), ALLOW)]
