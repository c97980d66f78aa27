"""`regate matrix` on the LiteLLM docs' parity configs (roles, scopes, several teams, issuers,
prefix routes, custom policies) against hand-written tables of who may call what."""

from __future__ import annotations

from regate import compiler
from regate.audit import matrix

from ..compiler.conftest import ROOT
from .test_matrix import INFO, MANAGEMENT, OPENAI, partly, table

DOCS = ROOT / "examples" / "litellm-docs"
NO_KEY = "deny master_key_not_configured"  # these docs' configs set no master key
NEVER = "deny route_not_allowed"
ADMIN = "admin token (scope litellm_proxy_admin)"
DEFAULT_MEMBER = partly(OPENAI | INFO, MANAGEMENT)  # a team or user with the default routes (openai + info)


def build(name: str) -> matrix.Matrix:
    return matrix.build(compiler.load_config(DOCS / name))


def refused(reason: str, columns: list[str]) -> list[str]:
    """Every cell refused for `reason`, except the public routes (open to any caller)."""
    return ["allow" if c == "public_routes" else f"deny {reason}" for c in columns]


def test_rbac_roles_doc_config():
    """LiteLLM docs, RBAC: the role litellm.api.consumer maps to team (its object id names the team);
    role_permissions give the team role /v1/chat/completions only, and the model anthropic-claude."""
    m = build("rbac-roles.yaml")
    columns = ["management_routes", "/v1/chat/completions", "openai_routes", "info_routes", "public_routes",
               "(any other path)", "model anthropic-claude", "(any other model)"]
    assert [c.label for c in m.columns] == columns
    team = [NEVER, "allow", partly({"/v1/chat/completions"}, OPENAI), NEVER, "allow", NEVER, "allow",
            "deny model_not_allowed"]
    user = [partly(OPENAI | INFO, MANAGEMENT), "allow", "allow", "allow", "allow", NEVER]
    assert table(m) == {
        "master key": [NO_KEY] * 8,
        ADMIN: ["allow", NEVER, NEVER, partly(MANAGEMENT, INFO), "allow", NEVER, NEVER, NEVER],
        "team token": team,
        "token with role litellm.api.consumer": team,
        "virtual key of a team": team,
        "virtual key of a user": user + ["allow", "allow"],  # no role_permissions for internal_user
        "virtual key limited to anthropic-claude": user + ["allow", "deny model_not_allowed"],
        "team token, team limited to anthropic-claude": team,
        "token without a role": refused("no_role", columns),
        "no credential": refused("missing_credential", columns),
    }
    role = next(p for p in m.principals if p.kind == "role_mapping")
    assert role.credential == {"type": "jwt", "claims": {"roles": ["litellm.api.consumer"],
                                                         "oid": "object-litellm.api.consumer"}}
    assert role.store["teams"] == {"object-litellm.api.consumer": []}


def test_scope_mappings_doc_config():
    """LiteLLM docs, scopes: each scope grants its model; a team token without a mapped scope may use
    no model at all; keys are no tokens, so scopes do not bound them."""
    m = build("scope-mappings.yaml")
    columns = ["management_routes", "openai_routes", "info_routes", "public_routes", "(any other path)",
               "model anthropic-claude", "model gpt-3.5-turbo-testing", "(any other model)"]
    assert [c.label for c in m.columns] == columns
    routes = [DEFAULT_MEMBER, "allow", "allow", "allow", NEVER]
    no_model = "deny model_not_allowed"
    assert table(m) == {
        "master key": [NO_KEY] * 8,
        ADMIN: ["allow", NEVER, partly(MANAGEMENT, INFO), "allow", NEVER, NEVER, NEVER, NEVER],
        "team token": routes + [no_model] * 3,
        "team token with scope litellm.api.consumer": routes + ["allow", no_model, no_model],
        "team token with scope litellm.api.gpt_3_5_turbo": routes + [no_model, "allow", no_model],
        "virtual key of a team": routes + ["allow"] * 3,
        "virtual key of a user": routes + ["allow"] * 3,
        "virtual key limited to anthropic-claude": routes + ["allow", no_model, no_model],
        "team token, team limited to anthropic-claude": routes + [no_model] * 3,
        "token without a role": refused("no_role", columns),
        "no credential": refused("missing_credential", columns),
    }
    scoped = next(p for p in m.principals if p.label == "team token with scope litellm.api.consumer")
    assert scoped.credential["claims"] == {"client_id": "team-a", "scope": "openid litellm.api.consumer"}


def test_team_model_access_doc_config():
    """LiteLLM docs, several teams per token: the token runs as its first team, or as the team its
    x-litellm-team-id header selects; a team it was not granted is refused (even one the store has);
    with team model access enforced, a token naming no team is refused, and users are upserted."""
    m = build("team-model-access.yaml")
    columns = ["management_routes", "openai_routes", "info_routes", "public_routes", "(any other path)"]
    assert [c.label for c in m.columns] == columns
    member = [DEFAULT_MEMBER, "allow", "allow", "allow", NEVER]
    assert table(m) == {
        "master key": [NO_KEY] * 5,
        ADMIN: ["allow", NEVER, partly(MANAGEMENT, INFO), "allow", NEVER],
        "team token": member,
        "token of teams team-a, team-b": member,
        "token of teams team-a, team-b selecting team-b (x-litellm-team-id)": member,
        "token of teams team-a, team-b naming team-other (x-litellm-team-id)": refused("team_not_granted", columns),
        "internal user token": refused("team_not_found", columns),
        "team token of a user not in the store": member,  # user_id_upsert creates it
        "virtual key of a team": member,
        "virtual key of a user": member,
        "token without a role": refused("no_role", columns),
        "no credential": refused("missing_credential", columns),
    }
    header = [p for p in m.principals if p.header is not None]
    assert [(p.header, p.credential["claims"]) for p in header] == [
        ("team-b", {"sub": "user-1", "groups": ["team-a", "team-b"]}),
        ("team-other", {"sub": "user-1", "groups": ["team-a", "team-b"]})]
    assert header[1].store["teams"] == {"team-a": [], "team-b": [], "team-other": []}


def test_team_prefix_routes_doc_config():
    """LiteLLM docs, prefix routes: /internal-models/* opens every path below the prefix to teams."""
    m = build("team-prefix-routes.yaml")
    columns = ["management_routes", "openai_routes", "info_routes", "/internal-models/*", "public_routes",
               "(any other path)"]
    assert [c.label for c in m.columns] == columns
    assert m.columns[3].paths == ("/internal-models/regate-any",)
    team = [DEFAULT_MEMBER, "allow", "allow", "allow", "allow", NEVER]
    assert table(m) == {
        "master key": [NO_KEY] * 6,
        ADMIN: ["allow", NEVER, partly(MANAGEMENT, INFO), NEVER, "allow", NEVER],
        "team token": team,
        "token of teams team-a, team-b": team,
        "token of teams team-a, team-b selecting team-b (x-litellm-team-id)": team,
        "token of teams team-a, team-b naming team-other (x-litellm-team-id)": refused("team_not_granted", columns),
        "virtual key of a team": team,
        "virtual key of a user": [DEFAULT_MEMBER, "allow", "allow", NEVER, "allow", NEVER],  # users get no prefix
        "token without a role": refused("no_role", columns),
        "no credential": refused("missing_credential", columns),
    }


def test_issuers_claim_mapping_doc_config():
    """LiteLLM docs, issuers: Google's tokens name their team by sub, Keycloak's their user by sub
    (with an email); each is a principal under its own claim names."""
    m = build("issuers-claim-mapping.yaml")
    columns = ["management_routes", "openai_routes", "info_routes", "public_routes", "(any other path)"]
    member = [DEFAULT_MEMBER, "allow", "allow", "allow", NEVER]
    google, keycloak = "https://accounts.google.com", "https://keycloak.example.com/realms/my-realm"
    assert table(m) == {
        "master key": [NO_KEY] * 5,
        ADMIN: ["allow", NEVER, partly(MANAGEMENT, INFO), "allow", NEVER],
        "team token": member,
        f"token of issuer {google}": member,
        f"token of issuer {keycloak} (email @example.com)": member,
        "virtual key of a team": member,
        "virtual key of a user": member,
        "token without a role": refused("no_role", columns),
        "no credential": refused("missing_credential", columns),
    }
    issued = {p.needs_issuer: p.credential for p in m.principals if p.kind == "issuer"}
    assert issued == {
        google: {"type": "jwt", "issuer": google, "claims": {"iss": google, "sub": "team-a"}},
        keycloak: {"type": "jwt", "issuer": keycloak,
                   "claims": {"iss": keycloak, "client_id": "team-a", "sub": "user-1", "email": "dev@example.com"}},
    }


def test_custom_policy_doc_config():
    """LiteLLM docs' custom_validate as a regate custom policy: tokens without the tenant and claims
    it wants are refused with its own codes; keys and the master key are no tokens."""
    m = build("custom-validate.yaml")
    columns = ["management_routes", "openai_routes", "info_routes", "public_routes", "(any other path)"]
    assert [c.label for c in m.columns] == columns
    # the custom checks run after the built-in ones: where a route is refused, that reason speaks
    assert DEFAULT_MEMBER == "allow 8/30 (deny: route_not_allowed 22)"
    token = ["deny claims_not_allowed 8, route_not_allowed 22", "deny claims_not_allowed", "deny claims_not_allowed",
             "allow", NEVER]
    member = [DEFAULT_MEMBER, "allow", "allow", "allow", NEVER]
    assert table(m) == {
        "master key": ["allow"] * 5,
        ADMIN: ["deny claims_not_allowed", NEVER, "deny claims_not_allowed 8, route_not_allowed 10", "allow", NEVER],
        "team token": token,
        "internal user token": token,
        "team token of a user not in the store": token,
        "virtual key of a team": member,
        "virtual key of a user": member,
        "token without a role": refused("no_role", columns),
        "no credential": refused("missing_credential", columns),
    }


def test_keycloak_roles_case():
    """Keycloak client roles mapped to each regate role, realm roles as the allowed user roles, and
    role_permissions narrowing internal users to openai_routes + /user/info and gpt-4o-mini."""
    m = matrix.build(compiler.load_config(ROOT / "tests" / "golden" / "cases" / "keycloak-roles.yaml"))
    columns = ["management_routes", "openai_routes", "info_routes", "/user/info", "public_routes",
               "(any other path)", "model gpt-4o-mini", "(any other model)"]
    assert [c.label for c in m.columns] == columns
    admin = ["allow", NEVER, partly(MANAGEMENT, INFO), "allow", "allow", NEVER, NEVER, NEVER]
    team = [DEFAULT_MEMBER, "allow", "allow", "allow", "allow", NEVER, "allow", "allow"]
    user_routes = OPENAI | {"/user/info"}
    user = [partly(user_routes, MANAGEMENT), "allow", partly(user_routes, INFO), "allow", "allow", NEVER, "allow",
            "deny model_not_allowed"]
    assert table(m) == {
        "master key": [NO_KEY] * 8,
        ADMIN: admin,
        "team token": team,
        "internal user token": user,
        "token with role proxy-admin": admin,
        "token with role ai-team": team,
        "token with role ai-user": user,
        "team token with user role llm-power-users": team,
        "team token without an allowed user role": refused("role_not_allowed", columns),
        "team token of a user not in the store": [
            "deny route_not_allowed 22, user_not_found 8", "deny user_not_found", "deny user_not_found",
            "deny user_not_found", "allow", NEVER, "deny user_not_found", "deny user_not_found"],
        "virtual key of a team": team,
        "virtual key of a user": user,
        "virtual key limited to gpt-4o-mini": user,
        "team token, team limited to gpt-4o-mini": team[:-1] + ["deny model_not_allowed"],
        "token without a role": refused("no_role", columns),
        "no credential": refused("missing_credential", columns),
    }
    roles = {p.label: p.credential["claims"] for p in m.principals if p.kind == "role_mapping"}
    allowed = {"realm_access": {"roles": ["llm-users"]}}
    assert roles == {
        "token with role proxy-admin": {"sub": "user-1", **allowed,
                                        "resource_access": {"litellm-proxy": {"roles": ["proxy-admin"]}}, "azp": "object-proxy-admin"},
        "token with role ai-team": {"sub": "user-1", **allowed,
                                    "resource_access": {"litellm-proxy": {"roles": ["ai-team"]}}, "azp": "object-ai-team"},
        "token with role ai-user": {"sub": "user-1", **allowed,
                                    "resource_access": {"litellm-proxy": {"roles": ["ai-user"]}}, "azp": "object-ai-user"},
    }


def test_team_default_case():
    """team_id_default: a token without a team claim runs as the default team, so even a token that
    names nobody may call the team routes (LiteLLM's meaning of the key)."""
    m = matrix.build(compiler.load_config(ROOT / "tests" / "golden" / "cases" / "team-default.yaml"))
    columns = ["management_routes", "openai_routes", "info_routes", "public_routes", "(any other path)"]
    assert [c.label for c in m.columns] == columns
    member = [DEFAULT_MEMBER, "allow", "allow", "allow", NEVER]
    rows = table(m)
    assert rows["token without a team claim (team_id_default everyone)"] == member
    assert rows["token without a role"] == member
    default = next(p for p in m.principals if p.kind == "default_team")
    assert (default.credential["claims"], default.store["teams"]) == ({"sub": "user-1"}, {"everyone": []})
