"""Decision tables for roles, scopes, composed model limits and route wildcards (issue 13), on
a real OPA with the LiteLLM docs' configs and the golden cases."""

from __future__ import annotations

import pytest

from .test_decisions import check, jwt

KNOWN = {"user_id": "u1", "user_exists": True}


def with_model(doc, model):
    doc["request"]["model"] = model
    return doc


def key(team="team-a", models=(), user="u1"):
    return {"type": "virtual_key", "key": {"user_id": user, "team_id": team, "org_id": None, "models": list(models)}}


def request(credential, path="/v1/chat/completions", model=None, facts=None):
    doc = {"request": {"method": "POST", "path": path}, "credential": credential}
    if model:
        doc["request"]["model"] = model
    if facts is not None:
        doc["facts"] = facts
    return doc


# litellm-docs/rbac-roles: roles → team (object id oid); role_permissions team: anthropic-claude, /v1/chat/completions.
CONSUMER = {"roles": ["litellm.api.consumer"], "oid": "obj-1"}
RBAC_TABLE = [
    ("mapped team role, its model", with_model(jwt(CONSUMER, facts={"teams": {"obj-1": []}}), "anthropic-claude"),
     True, 200, None, "obj-1"),
    ("mapped team role, roles as a string", with_model(jwt(dict(CONSUMER, roles="openid litellm.api.consumer")),
                                                       "anthropic-claude"), True, 200, None, "obj-1"),
    ("mapped team role, another model", with_model(jwt(CONSUMER), "gpt-4o"), False, 403, "model_not_allowed", "obj-1"),
    ("mapped team role, no model named", jwt(CONSUMER), True, 200, None, "obj-1"),
    ("role_permissions routes replace the team routes", jwt(CONSUMER, "/v1/models"), False, 403, "route_not_allowed", "obj-1"),
    ("an unmapped role is no role", jwt({"roles": ["viewer"], "oid": "obj-1"}), False, 403, "no_role", None),
    ("a mapped team role without object id is no team", jwt({"roles": ["litellm.api.consumer"]}), False, 403, "no_role", None),
    ("roles of the wrong type", jwt({"roles": [1], "oid": "obj-1"}), False, 401, "invalid_claims", None),
    ("roles as an object", jwt({"roles": {"a": 1}, "oid": "obj-1"}), False, 401, "invalid_claims", None),
    ("object id of the wrong type", jwt({"roles": ["litellm.api.consumer"], "oid": 5}), False, 401, "invalid_claims", None),
    ("a team claim comes after the object id", jwt(dict(CONSUMER, client_id="team-x")), True, 200, None, "obj-1"),
    ("a team key is held to the team role's models too",
     request(key(), model="gpt-4o"), False, 403, "model_not_allowed", "team-a"),
    ("a team key within the role's models", request(key(), model="anthropic-claude"), True, 200, None, "team-a"),
    ("the master key is not held to role models", request({"type": "master_key"}, model="gpt-4o"), True, 200, None, None),
]


@pytest.mark.parametrize("label,doc,allow,status,reason,team", RBAC_TABLE, ids=[r[0] for r in RBAC_TABLE])
def test_rbac_roles(opa_for, label, doc, allow, status, reason, team):
    decision = opa_for("litellm-docs/rbac-roles").decide(doc)
    check(decision, allow, status, reason)
    assert decision["subject"]["team_id"] == team, decision


def test_the_model_message_names_the_role(opa_for):
    decision = opa_for("litellm-docs/rbac-roles").decide(with_model(jwt(CONSUMER), "gpt-4o"))
    assert decision["message"] == "role team may not use model gpt-4o"


# cases/keycloak-roles: resource_access.litellm-proxy.roles; proxy-admin / ai-team / ai-user;
# object id azp; realm_access.roles must hold llm-users or llm-power-users; internal_user: gpt-4o-mini.
def kc(client_roles, realm_roles=("llm-users",), **claims):
    return {"sub": "u1", "azp": "obj-9", "resource_access": {"litellm-proxy": {"roles": list(client_roles)}},
            "realm_access": {"roles": list(realm_roles)}, **claims}


KEYCLOAK_TABLE = [
    # (label, input, allow, status, reason, role, team, user)
    ("proxy-admin maps to admin", jwt(kc(["proxy-admin"]), "/team/new"), True, 200, None, "proxy_admin", None, "u1"),
    ("admin wins over team", jwt(kc(["ai-team", "proxy-admin"]), "/team/new"), True, 200, None, "proxy_admin", None, "u1"),
    ("team wins over user: the object id is the team", jwt(kc(["ai-user", "ai-team"]), facts=KNOWN), True, 200, None,
     "team", "obj-9", "u1"),
    ("a mapped user role: the object id is the user", jwt(kc(["ai-user"]), facts={"user_id": "obj-9", "user_exists": True}),
     True, 200, None, "internal_user", None, "obj-9"),
    ("the user role's models", with_model(jwt(kc(["ai-user"]), facts={"user_id": "obj-9", "user_exists": True}), "azure-gpt-4o"),
     False, 403, "model_not_allowed", "internal_user", None, "obj-9"),
    ("the user role's routes", jwt(kc(["ai-user"]), "/user/info", facts={"user_id": "obj-9", "user_exists": True}),
     True, 200, None, "internal_user", None, "obj-9"),
    ("no allowed realm role", jwt(kc(["ai-team"], realm_roles=["guests"]), facts=KNOWN), False, 403, "role_not_allowed",
     "team", "obj-9", "u1"),
    ("realm roles as a string", jwt(kc(["ai-team"], realm_roles=[]) | {"realm_access": {"roles": "x llm-power-users"}},
                                    facts=KNOWN), True, 200, None, "team", "obj-9", "u1"),
    ("no realm roles at all", jwt({"sub": "u1", "azp": "obj-9", "resource_access": {"litellm-proxy": {"roles": ["ai-team"]}}},
                                  facts=KNOWN), False, 403, "role_not_allowed", "team", "obj-9", "u1"),
    ("admins need no allowed role", jwt(kc(["proxy-admin"], realm_roles=[]), "/team/new"), True, 200, None, "proxy_admin",
     None, "u1"),
    ("the literal claim name wins over the path",
     jwt(kc(["ai-user"]) | {"resource_access.litellm-proxy.roles": ["proxy-admin"]}, "/team/new"),
     True, 200, None, "proxy_admin", None, "u1"),
]


@pytest.mark.parametrize("label,doc,allow,status,reason,role,team,user", KEYCLOAK_TABLE, ids=[r[0] for r in KEYCLOAK_TABLE])
def test_keycloak_roles(opa_for, label, doc, allow, status, reason, role, team, user):
    decision = opa_for("cases/keycloak-roles").decide(doc)
    check(decision, allow, status, reason)
    assert (decision["role"], decision["subject"]["team_id"], decision["subject"]["user_id"]) == (role, team, user), decision


# litellm-docs/scope-mappings: litellm.api.consumer → anthropic-claude, litellm.api.gpt_3_5_turbo → gpt-3.5-turbo-testing.
BOTH = "litellm.api.consumer litellm.api.gpt_3_5_turbo"
SCOPES_TABLE = [
    ("a scope's model", with_model(jwt({"client_id": "t1", "scope": "litellm.api.consumer"}), "anthropic-claude"), True, 200, None),
    ("another scope's model", with_model(jwt({"client_id": "t1", "scope": "litellm.api.consumer"}), "gpt-3.5-turbo-testing"),
     False, 403, "model_not_allowed"),
    ("the union of the scopes", with_model(jwt({"client_id": "t1", "scope": BOTH}), "gpt-3.5-turbo-testing"), True, 200, None),
    ("scopes as a list", with_model(jwt({"client_id": "t1", "scope": ["litellm.api.gpt_3_5_turbo"]}), "gpt-3.5-turbo-testing"),
     True, 200, None),
    ("scopes in scp", with_model(jwt({"client_id": "t1", "scp": ["litellm.api.consumer"]}), "anthropic-claude"), True, 200, None),
    ("no mapped scope: no model", with_model(jwt({"client_id": "t1", "scope": "openid"}), "anthropic-claude"),
     False, 403, "model_not_allowed"),
    ("no mapped scope, no model named", jwt({"client_id": "t1", "scope": "openid"}), True, 200, None),
    ("admins too", with_model(jwt({"scope": "litellm_proxy_admin"}, "/key/generate"), "anthropic-claude"),
     False, 403, "model_not_allowed"),
    ("scope and team limits both apply",
     with_model(jwt({"client_id": "t1", "scope": BOTH}, facts={"teams": {"t1": ["anthropic-claude"]}}), "gpt-3.5-turbo-testing"),
     False, 403, "model_not_allowed"),
    ("virtual keys have no scopes to limit them", request(key(), model="gpt-3.5-turbo-testing"), True, 200, None),
]


@pytest.mark.parametrize("label,doc,allow,status,reason", SCOPES_TABLE, ids=[r[0] for r in SCOPES_TABLE])
def test_scope_mappings(opa_for, label, doc, allow, status, reason):
    check(opa_for("litellm-docs/scope-mappings").decide(doc), allow, status, reason)


def test_every_model_limit_is_named(opa_for):
    doc = with_model(jwt({"client_id": "t1", "scope": "openid"}, facts={"teams": {"t1": ["x"]}}), "y")
    decision = opa_for("litellm-docs/scope-mappings").decide(doc)
    assert decision["message"] == "team t1 may not use model y; this token's scopes may not use model y"


# litellm-docs/team-prefix-routes: /internal-models/* for teams; public_routes (default) for anyone.
ANONYMOUS = {"type": "none"}
ROUTES_TABLE = [
    ("below the prefix", jwt({"client_id": "t1"}, "/internal-models/anthropic/v1/messages"), True, 200, None),
    ("one segment below", jwt({"client_id": "t1"}, "/internal-models/x"), True, 200, None),
    ("not the bare prefix", jwt({"client_id": "t1"}, "/internal-models"), False, 403, "route_not_allowed"),
    ("not a look-alike", jwt({"client_id": "t1"}, "/internal-modelsx/y"), False, 403, "route_not_allowed"),
    ("never a non-canonical path", jwt({"client_id": "t1"}, "/internal-models/../key/generate"), False, 400,
     "path_not_canonical"),
    ("never with an empty segment", jwt({"client_id": "t1"}, "/internal-models//x"), False, 400, "path_not_canonical"),
    ("not for admins", jwt({"scope": "litellm_proxy_admin"}, "/internal-models/x"), False, 403, "route_not_allowed"),
    ("a public route without credential", request(ANONYMOUS, "/routes"), True, 200, None),
    ("the public root without credential", request(ANONYMOUS, "/"), True, 200, None),
    ("a public route with a token of no role", jwt({"scope": "openid"}, "/routes"), True, 200, None),
    ("a private route without credential", request(ANONYMOUS, "/v1/models"), False, 401, "missing_credential"),
    ("a non-canonical public route", request(ANONYMOUS, "/routes/"), False, 401, "missing_credential"),
]


@pytest.mark.parametrize("label,doc,allow,status,reason", ROUTES_TABLE, ids=[r[0] for r in ROUTES_TABLE])
def test_prefix_and_public_routes(opa_for, label, doc, allow, status, reason):
    check(opa_for("litellm-docs/team-prefix-routes").decide(doc), allow, status, reason)


# litellm-docs/issuers-claim-mapping: Google's sub is a team, Keycloak's sub a user (email claim too);
# the top-level fields (client_id team) for tokens verified by JWT_PUBLIC_KEY_URL.
GOOGLE = "https://accounts.google.com"
KEYCLOAK = "https://keycloak.example.com/realms/my-realm"


def issued(claims, issuer, path="/v1/chat/completions", facts=None):
    doc = jwt(claims, path, facts=facts)
    doc["credential"]["issuer"] = issuer
    return doc


ISSUERS_TABLE = [
    # (label, input, allow, status, reason, role, team, user)
    ("Google's sub is a team", issued({"sub": "g-team", "iss": GOOGLE}, GOOGLE), True, 200, None, "team", "g-team", None),
    ("Keycloak's sub is a user", issued({"sub": "k-user", "email": "k@x.org", "iss": KEYCLOAK}, KEYCLOAK), True, 200, None,
     "internal_user", None, "k-user"),
    ("Keycloak's tokens keep the top-level team field", issued({"sub": "k-user", "client_id": "k-team"}, KEYCLOAK),
     True, 200, None, "team", "k-team", "k-user"),
    ("Google's tokens have no user field", issued({"sub": "g-team", "email": "g@x.org"}, GOOGLE), True, 200, None,
     "team", "g-team", None),
    ("the iss claim alone chooses nothing", jwt({"sub": "x", "iss": GOOGLE}), False, 403, "no_role", None, None, None),
    ("JWT_PUBLIC_KEY_URL's tokens use the top-level fields", issued({"sub": "x", "client_id": "t"}, None), True, 200, None,
     "team", "t", None),
    ("a malformed per-issuer claim names its claim", issued({"sub": ["g"]}, GOOGLE), False, 401, "invalid_claims",
     None, None, None),
    ("admins by scope from either issuer", issued({"scope": "litellm_proxy_admin", "sub": "g-team"}, GOOGLE, "/team/new"),
     True, 200, None, "proxy_admin", None, None),
]


@pytest.mark.parametrize("label,doc,allow,status,reason,role,team,user", ISSUERS_TABLE, ids=[r[0] for r in ISSUERS_TABLE])
def test_per_issuer_claim_fields(opa_for, label, doc, allow, status, reason, role, team, user):
    decision = opa_for("litellm-docs/issuers-claim-mapping").decide(doc)
    check(decision, allow, status, reason)
    if allow:
        assert (decision["role"], decision["subject"]["team_id"], decision["subject"]["user_id"]) == (role, team, user)


def test_a_malformed_per_issuer_claim_is_named(opa_for):
    decision = opa_for("litellm-docs/issuers-claim-mapping").decide(issued({"sub": ["g"]}, GOOGLE))
    assert decision["message"] == "malformed claims: sub"
