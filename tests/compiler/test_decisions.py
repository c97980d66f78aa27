"""Decision tables: the compiled policies evaluated by a real OPA server.

Each row is (input, expected allow, status, first reason). The inputs are what
the enforcer sends (DESIGN.md §4); the expectations are the semantics of §3.
"""

from __future__ import annotations

import pytest

from regate import compiler
from tests.support.opa import OpaServer

from .conftest import SHIPPED


def jwt(claims, path="/v1/chat/completions", facts=None, model=None):
    doc = {"request": {"method": "POST", "path": path}, "credential": {"type": "jwt", "claims": claims}}
    if model:
        doc["request"]["model"] = model
    if facts is not None:
        doc["facts"] = facts
    return doc


def check(decision, allow, status, reason):
    assert decision["allow"] is allow, decision
    assert decision["status"] == status, decision
    if reason is None:
        assert decision["reasons"] == [] and decision["message"] == "allowed", decision
    else:
        assert decision["reasons"][0] == reason, decision
        assert decision["message"], decision


# examples/regate.yaml: team_id claim, sub user claim with upsert, email domains, custom routes.
ADMIN = {"scope": "openid litellm_proxy_admin", "sub": "admin-1"}
TEAM = {"team_id": "team-a", "sub": "u1", "email": "dev@example.com"}
KNOWN = {"user_id": "u1", "user_exists": True}
TEAM_MODELS = dict(KNOWN, teams={"team-a": ["gpt-4o-mini"]})
REGATE_TABLE = [
    ("admin scope as string", jwt(ADMIN, "/key/generate"), True, 200, None),
    ("admin scope as list", jwt({"scope": ["openid", "litellm_proxy_admin"]}, "/key/generate"), True, 200, None),
    ("admin scope in scp", jwt({"scp": ["litellm_proxy_admin"]}, "/key/generate"), True, 200, None),
    ("admin scope in scp string", jwt({"scp": "a litellm_proxy_admin b"}, "/team/block"), True, 200, None),
    ("admin scope prefix is not the scope", jwt({"scope": "litellm_proxy_admin_x"}, "/key/generate"), False, 403, "no_role"),
    ("admin on spend route (configured)", jwt(ADMIN, "/global/spend"), True, 200, None),
    ("admin on llm route (not configured)", jwt(ADMIN, "/v1/chat/completions"), False, 403, "route_not_allowed"),
    ("admin on templated management route", jwt(ADMIN, "/key/sk-abc/regenerate"), True, 200, None),
    ("admin of a blocked team is not blocked", jwt(dict(ADMIN, team_id="blocked-team"), "/team/unblock"), True, 200, None),
    ("team on llm route", jwt(TEAM, facts=KNOWN), True, 200, None),
    ("team on info route", jwt(TEAM, "/team/info", facts=KNOWN), True, 200, None),
    ("team on literal extra route", jwt(TEAM, "/spend/logs", facts=KNOWN), True, 200, None),
    ("team on management route", jwt(TEAM, "/key/generate", facts=KNOWN), False, 403, "route_not_allowed"),
    ("team on global spend", jwt(TEAM, "/global/spend", facts=KNOWN), False, 403, "route_not_allowed"),
    ("team on templated route", jwt(TEAM, "/v1/threads/th_1/messages", facts=KNOWN), True, 200, None),
    ("template matches one segment only", jwt(TEAM, "/v1/threads/a/b/messages", facts=KNOWN), False, 403, "route_not_allowed"),
    ("template adds no segments", jwt(TEAM, "/v1/responses/r1/input_items/x", facts=KNOWN), False, 403, "route_not_allowed"),
    ("models template", jwt(TEAM, "/v1/files/file-1/content", facts=KNOWN), True, 200, None),
    ("blocked team", jwt(dict(TEAM, team_id="blocked-team"), facts=KNOWN), False, 403, "team_blocked"),
    ("user token on llm route", jwt({"sub": "u1", "email": "u1@example.com"}, facts=KNOWN), True, 200, None),
    ("user token on team-only route", jwt({"sub": "u1", "email": "u1@example.com"}, "/spend/logs", facts=KNOWN),
     False, 403, "route_not_allowed"),
    ("email other domain", jwt(dict(TEAM, email="dev@other.com"), facts=KNOWN), False, 403, "email_domain_not_allowed"),
    ("email two @", jwt(dict(TEAM, email="a@b@example.com"), facts=KNOWN), False, 403, "email_domain_not_allowed"),
    ("email uppercase domain", jwt(dict(TEAM, email="Dev@EXAMPLE.COM"), facts=KNOWN), True, 200, None),
    ("email second domain", jwt(dict(TEAM, email="dev@corp.example.com"), facts=KNOWN), True, 200, None),
    ("email subdomain of allowed", jwt(dict(TEAM, email="dev@x.example.com"), facts=KNOWN), False, 403, "email_domain_not_allowed"),
    ("email suffix trick", jwt(dict(TEAM, email="dev@evilexample.com"), facts=KNOWN), False, 403, "email_domain_not_allowed"),
    ("email empty local part", jwt(dict(TEAM, email="@example.com"), facts=KNOWN), False, 403, "email_domain_not_allowed"),
    ("email unverified", jwt(dict(TEAM, email_verified=False), facts=KNOWN), False, 403, "email_domain_not_allowed"),
    ("email verified", jwt(dict(TEAM, email_verified=True), facts=KNOWN), True, 200, None),
    ("email missing", jwt({"team_id": "team-a", "sub": "u1"}, facts=KNOWN), False, 403, "email_domain_not_allowed"),
    ("admin needs no email", jwt({"scope": "litellm_proxy_admin"}, "/key/generate"), True, 200, None),
    ("email only is an internal user", jwt({"email": "x@example.com", "scope": "openid"}), True, 200, None),
    ("no claims at all", jwt({}), False, 403, "no_role"),
    ("scope as number", jwt(dict(TEAM, scope=42), facts=KNOWN), False, 401, "invalid_claims"),
    ("scope list with number", jwt(dict(TEAM, scope=["a", 1]), facts=KNOWN), False, 401, "invalid_claims"),
    ("team id as object", jwt(dict(TEAM, team_id={"id": "team-a"}), facts=KNOWN), False, 401, "invalid_claims"),
    ("team id as number", jwt(dict(TEAM, team_id=7), facts=KNOWN), False, 401, "invalid_claims"),
    ("team id empty string", jwt(dict(TEAM, team_id=""), facts=KNOWN), False, 401, "invalid_claims"),
    ("user id as list", jwt(dict(TEAM, sub=["u1"]), facts=KNOWN), False, 401, "invalid_claims"),
    ("email as bool", jwt(dict(TEAM, email=True), facts=KNOWN), False, 401, "invalid_claims"),
    ("unknown user is upserted", jwt(TEAM, facts={"user_id": "u1", "user_exists": False}), True, 200, None),
    ("team within its models", jwt(TEAM, facts=TEAM_MODELS, model="gpt-4o-mini"), True, 200, None),
    ("team outside its models", jwt(TEAM, facts=TEAM_MODELS, model="gpt-4o"), False, 403, "model_not_allowed"),
    ("team models of another team do not apply", jwt(TEAM, facts=dict(KNOWN, teams={"team-b": ["x"]}),
                                                      model="gpt-4o-mini"), True, 200, None),
    ("admin is not limited by team models", jwt(dict(ADMIN, team_id="team-a"), "/key/generate",
                                                facts=TEAM_MODELS, model="gpt-4o"), True, 200, None),
    ("missing credential", {"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "none"}},
     False, 401, "missing_credential"),
    ("master key anywhere", {"request": {"method": "POST", "path": "/anything/at/all"}, "credential": {"type": "master_key"}},
     True, 200, None),
]


@pytest.mark.parametrize("label,doc,allow,status,reason", REGATE_TABLE, ids=[r[0] for r in REGATE_TABLE])
def test_regate_example(opa_for, label, doc, allow, status, reason):
    check(opa_for("examples/regate").decide(doc), allow, status, reason)


def test_no_role_row_is_an_internal_user_by_email(opa_for):
    """As in LiteLLM, a token without a user claim is identified by its email."""
    decision = opa_for("examples/regate").decide(
        jwt({"email": "x@example.com"}, facts={"user_id": "x@example.com", "user_exists": True}))
    assert decision["role"] == "internal_user"
    assert decision["subject"]["user_id"] == "x@example.com"


def test_upsert_flag_and_subject(opa_for):
    decision = opa_for("examples/regate").decide(
        jwt(dict(TEAM, org_id="org-1", customer_id="cust-9"), facts={"user_id": "u1", "user_exists": False}))
    assert decision["upsert_user"] is True
    assert decision["role"] == "team"
    assert decision["subject"] == {"user_id": "u1", "team_id": "team-a", "org_id": "org-1",
                                   "end_user_id": "cust-9", "email": "dev@example.com"}


NON_CANONICAL = [
    "//key/generate",
    "/v1/chat/completions/../../key/generate",
    "/v1/./chat/completions",
    "/v1/chat/completions/",
    "/key%2Fgenerate",
    "/key%2fgenerate",
    "/v1/chat%2e%2e/completions",
    "/key\\generate",
    "/v1/chat/completions?x=1",
    "/v1/chat/completions#x",
    "/key/generate\x00",
    "/key/generate\n",
    "v1/chat/completions",
    "",
]


@pytest.mark.parametrize("path", NON_CANONICAL)
@pytest.mark.parametrize("credential", [{"type": "master_key"}, {"type": "jwt", "claims": ADMIN}])
def test_non_canonical_paths_are_400(opa_for, path, credential):
    decision = opa_for("examples/regate").decide({"request": {"method": "POST", "path": path}, "credential": credential})
    check(decision, False, 400, "path_not_canonical")


def test_team_refused_while_state_missing(opa_bin, compiled, tmp_path):
    out = compiler.bundle.write(compiled["examples/regate"], tmp_path / "b.tar.gz")
    with OpaServer(opa_bin, bundle=str(out)) as opa:
        check(opa.decide(jwt(TEAM, facts=KNOWN)), False, 503, "state_unavailable")
        check(opa.decide(jwt(ADMIN, "/team/block")), True, 200, None)  # admins do not depend on the state
        opa.put_state({"blocked_teams": {}, "sync_id": "s1"})
        check(opa.decide(jwt(TEAM, facts=KNOWN)), True, 200, None)


VKEY = {"type": "virtual_key", "key": {"user_id": "u1", "team_id": "team-a", "org_id": None, "models": ["gpt-4o-mini"]}}
VKEY_TABLE = [
    ("key of a team on llm route", {"request": {"method": "POST", "path": "/v1/chat/completions", "model": "gpt-4o-mini"},
                                    "credential": VKEY}, True, 200, None),
    ("key limited to its models", {"request": {"method": "POST", "path": "/v1/chat/completions", "model": "azure-gpt-4o"},
                                   "credential": VKEY}, False, 403, "model_not_allowed"),
    ("key on management route", {"request": {"method": "POST", "path": "/key/generate"}, "credential": VKEY},
     False, 403, "route_not_allowed"),
    ("key of a blocked team", {"request": {"method": "GET", "path": "/v1/models"},
                               "credential": {"type": "virtual_key", "key": {"team_id": "blocked-team", "models": []}}},
     False, 403, "team_blocked"),
    ("key of a user", {"request": {"method": "GET", "path": "/v1/models"},
                       "credential": {"type": "virtual_key", "key": {"user_id": "u9", "team_id": None, "models": []}}},
     True, 200, None),
]


@pytest.mark.parametrize("label,doc,allow,status,reason", VKEY_TABLE, ids=[r[0] for r in VKEY_TABLE])
def test_virtual_keys(opa_for, label, doc, allow, status, reason):
    check(opa_for("examples/regate").decide(doc), allow, status, reason)


# The LiteLLM docs' configs, each with its own claim names and routes.
DOCS_TABLE = [
    ("litellm-docs/admin-scope", jwt({"scope": "litellm-proxy-admin"}, "/key/generate"), True, 200, None),
    ("litellm-docs/admin-scope", jwt({"scope": "litellm_proxy_admin"}, "/key/generate"), False, 403, "no_role"),
    ("litellm-docs/admin-routes", jwt({"scope": ["litellm-proxy-admin"]}, "/v1/embeddings"), True, 200, None),
    ("litellm-docs/admin-routes", jwt({"scope": ["litellm-proxy-admin"]}, "/key/generate"), False, 403, "route_not_allowed"),
    ("litellm-docs/team-routes", jwt({"litellm-team": "t1"}, "/v1/chat/completions"), True, 200, None),
    ("litellm-docs/team-routes", jwt({"litellm-team": "t1"}, "/chat/completions"), False, 403, "route_not_allowed"),
    ("litellm-docs/team-routes", jwt({"client_id": "t1"}, "/v1/chat/completions"), False, 403, "no_role"),
    ("litellm-docs/custom-team-field", jwt({"client_id": "t1"}, "/v1/models/gpt-4o"), False, 403, "route_not_allowed"),
    ("litellm-docs/custom-team-field", jwt({"client_id": "t1"}, "/v1/models"), True, 200, None),
    ("litellm-docs/custom-team-field", jwt({"client_id": "t1"}, "/key/generate"), False, 403, "route_not_allowed"),
    ("litellm-docs/setup-proxy", jwt({"scope": "litellm_proxy_admin"}, "/key/generate"), True, 200, None),
    ("litellm-docs/tracking-fields", jwt({"client_id": "t1", "sub": "u1"}, facts={"user_id": "u1", "user_exists": False}),
     False, 401, "user_not_found"),
    ("litellm-docs/tracking-fields", jwt({"client_id": "t1", "sub": "u1"}, facts={"user_id": "u1", "user_exists": True}),
     True, 200, None),
    ("litellm-docs/tracking-fields", jwt({"client_id": "t1", "sub": "u1"}, facts={"user_id": "u2", "user_exists": True}),
     False, 401, "user_not_found"),
    ("litellm-docs/tracking-fields", jwt({"client_id": "t1", "sub": "u1"}), False, 401, "user_not_found"),
    ("litellm-docs/email-domain-upsert", jwt({"client_id": "t1", "email": "me@my-co.com"},
                                             facts={"user_id": "me@my-co.com", "user_exists": False}), True, 200, None),
    ("litellm-docs/email-domain-upsert", jwt({"client_id": "t1", "email": "me@My-Co.com"}), True, 200, None),
    ("litellm-docs/email-domain-upsert", jwt({"client_id": "t1", "email": "me@other-co.com"}), False, 403,
     "email_domain_not_allowed"),
    ("cases/nested-claims", jwt({"realm_access": {"team": "t1"}, "sub": "u1", "profile": {"email": "a@eng.example.com"}},
                                "/v1/models/gpt-4o", facts={"user_id": "u1", "user_exists": True}), True, 200, None),
    ("cases/nested-claims", jwt({"realm_access.team": "t1", "sub": "u1", "profile": {"email": "a@example.com"}},
                                "/v1/chat/completions", facts={"user_id": "u1", "user_exists": True}), True, 200, None),
    ("cases/nested-claims", jwt({"realm_access": {"team": "t1"}, "sub": "u1", "profile": {"email": "a@example.com"}},
                                "/v1/models", facts={"user_id": "u1", "user_exists": True}), False, 403, "route_not_allowed"),
    ("cases/nested-claims", jwt({"scope": "regate.admin"}, "/global/spend"), True, 200, None),
    ("cases/master-key-only", jwt({"scope": "litellm_proxy_admin"}, "/key/generate"), False, 401, "jwt_auth_disabled"),
]


@pytest.mark.parametrize("name,doc,allow,status,reason", DOCS_TABLE,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(DOCS_TABLE)])
def test_litellm_docs_configs(opa_for, name, doc, allow, status, reason):
    assert name in SHIPPED
    check(opa_for(name).decide(doc), allow, status, reason)


def test_nested_org_claim_with_dots_in_name(opa_for):
    decision = opa_for("cases/nested-claims").decide(jwt(
        {"realm_access": {"team": "t1"}, "sub": "u1", "profile": {"email": "a@example.com"},
         "https://example.com/claims/org": "org-7"}, facts={"user_id": "u1", "user_exists": True}))
    assert decision["subject"]["org_id"] == "org-7"
