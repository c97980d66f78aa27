"""Expected decisions for the rules a config switches off: the policy still carries them (as
constants the settings compile to), so the generated tests evaluate them as if the setting were
on, by replacing those constants (`with data.regate... as`), in cases named `test_if_<setting>_...`.
Added by testcases._Builder after the config's own cases; together they cover every rule.

Each function here takes the builder `b` of the config and adds nothing when the config turns
the setting on itself (its own cases then test it).
"""

from __future__ import annotations

from dataclasses import replace

from . import access_testcases, budget_testcases, team_testcases
from .routes import expand

TEAM = "team-a"  # the builder's team (testcases.TEAM)
TEAM_C = "team-c"
BLOCKED = "team-blocked"  # blocked in the builder's state (testcases.BLOCKED_TEAM)
MODEL = "model-a"
OTHER_MODEL = "model-b"
# Roles and mappings assumed where the config maps none.
ADMIN_ROLE, TEAM_ROLE, USER_ROLE = "regate-test-admin", "regate-test-team", "regate-test-user"
ASSUMED_MAPPINGS = {ADMIN_ROLE: ["proxy_admin"], TEAM_ROLE: ["team"], USER_ROLE: ["internal_user"]}
# Claim names assumed for the claim fields a config leaves unset.
ASSUMED_CLAIMS = {"team_ids_field": "groups", "team_alias_field": "team_alias", "org_alias_field": "org_alias",
                  "roles_field": "roles", "object_id_field": "oid", "user_roles_field": "user_roles"}


def add_cases(b, path: str | None) -> None:
    """Every as-if case `b`'s config needs; `path` is a route team tokens may call (None: none)."""
    if path is None:
        return
    _team_upsert(b, path)
    _enforced_team_models(b, path)
    _default_team(b, path)
    _team_alias(b, path)
    _team_list(b, path)
    _org_alias(b, path)
    _role_mappings(b, path)
    _user_roles(b, path)
    _role_models(b, path)
    _scopes(b, path)


def _claim(b, attr: str):
    """(claim, assumed) for `attr`: the config's claim, or ASSUMED_CLAIMS' read through its rule."""
    return b.assume(attr, ASSUMED_CLAIMS.get(attr))


def _team_upsert(b, path: str) -> None:
    """The team of the team id claim is created on its first allowed request (with enforced team
    model access, team_testcases tests it)."""
    p = b.policy
    if p.enforce_team_models.value and p.team_id_upsert.value:
        return
    asif = b if p.team_id_upsert.value else b.as_if(
        "if_team_id_upsert", f"{p.team_id_upsert.key} as if true", (("data.regate.teams.upsert", True),),
        team_id_upsert=True)
    unknown = asif.token(asif.claims_for("team"), path, teams={TEAM: None})
    asif.add("test_unknown_team_is_upserted", b.cite(p.team_id_upsert), unknown, True, 200, team=TEAM,
             upsert_team=True)


def _enforced_team_models(b, path: str) -> None:
    """Team model access enforced without an upsert or a default team: a team not in the store, and a
    token naming none, are refused (a config with exactly these settings tests them itself)."""
    p = b.policy
    if p.enforce_team_models.value and not p.team_id_upsert.value and p.team_id_default.value is None:
        return
    asif = b.as_if("if_team_model_access_enforced",
                   f"{p.enforce_team_models.key} as if true, without team_id_upsert and team_id_default",
                   (("data.regate.teams.enforce_models", True), ("data.regate.teams.upsert", False),
                    ("data.regate.teams.default_team", None)),
                   enforce_team_models=True, team_id_upsert=False, team_id_default=None)
    unknown = asif.token(asif.claims_for("team"), path, teams={TEAM: None})
    asif.add("test_unknown_team_is_403", "a team not in the store grants nothing", unknown, False, 403,
             "team_not_found")
    if not asif.derived_user(asif.claims_for("internal_user")):  # a user token needs a user claim
        claim, assumed = asif.assume("user_field")
        asif = asif.as_if("user_claim", f"{p.user_field.key} as if {claim.name}", (), assumed, user_field=claim)
    asif.add("test_token_without_team_is_403", "a token that names no team",
             asif.token(asif.claims_for("internal_user"), path), False, 403, "team_not_found")


def _default_team(b, path: str) -> None:
    p = b.policy
    if p.team_id_default.value is not None:
        return
    asif = b.as_if("if_team_id_default", f"{p.team_id_default.key} as if team-default",
                   (("data.regate.teams.default_team", "team-default"),), team_id_default="team-default")
    team_testcases.default_team(asif, path)


def _as_if_claim(b, attr: str, name: str):
    """(builder, claim): `b` as if the config named the claim for `attr` it leaves out."""
    claim, assumed = _claim(b, attr)
    return b.as_if(name, f"{getattr(b.policy, attr).key} as if {claim.name}", (), assumed, **{attr: claim}), claim


def _team_alias(b, path: str) -> None:
    if b.policy.team_alias_field.value is not None:
        return
    asif, _ = _as_if_claim(b, "team_alias_field", "if_team_alias_claim")
    team_testcases.alias_claim(asif, path)


def _team_list(b, path: str) -> None:
    if b.policy.team_ids_field.value is not None:
        return
    asif, claim = _as_if_claim(b, "team_ids_field", "if_team_list_claim")
    base = asif.claims_for("internal_user")
    asif.add("test_team_list_skips_a_blocked_first_team", "a blocked team does not block the token's other teams",
             asif.token(claim.put(base, [BLOCKED, TEAM_C]), path), True, 200, team=TEAM_C)


def _org_alias(b, path: str) -> None:
    """An organization alias claim names the one organization in the store with that alias."""
    p = b.policy
    claim, assumed = _claim(b, "org_alias_field")
    asif = b.as_if("if_org_alias_claim", f"{p.org_alias_field.key} as if {claim.name}", (), assumed,
                   org_alias_field=claim) if assumed else b
    doc = asif.token(claim.put(asif.claims_for("team"), "Org A"), path)
    doc["facts"]["org_aliases"] = {"Org A": ["org-1"]}
    asif.add_rule("test_org_alias_claim_names_its_organization", "an alias that one organization has",
                  "data.regate.identity.org_id", doc, '"org-1"')


def _role_mappings(b, path: str) -> None:
    """As if each regate role had a mapped role, where the config's mappings leave one out."""
    p = b.policy
    if {m.internal_role for m in p.role_mappings.value} >= {"proxy_admin", "team", "internal_user"}:
        return
    roles, assumed = _claim(b, "roles_field")
    object_id, assumed_id = _claim(b, "object_id_field")
    asif = b.as_if("if_roles_mapped", f"{p.role_mappings.key} as if {ASSUMED_MAPPINGS}",
                   (("data.regate.identity._role_mappings", ASSUMED_MAPPINGS),), assumed + assumed_id,
                   roles_field=roles, object_id_field=object_id)
    admin_path = access_testcases.path_of(b, "proxy_admin")
    if admin_path:
        asif.add("test_mapped_proxy_admin_role_is_admin", "a role mapped to proxy_admin",
                 asif.token(roles.put({}, [ADMIN_ROLE]), admin_path), True, 200)
    team = object_id.put(roles.put(asif.claims_for("internal_user"), f"openid {TEAM_ROLE}"), TEAM)
    asif.add("test_mapped_team_role_runs_as_the_object_id_team", "a role mapped to team, as a space-separated string",
             asif.token(team, path, teams={TEAM: []}), True, 200, team=TEAM)
    user = object_id.put(roles.put({}, [USER_ROLE]), "user-object-1")
    asif.add_rule("test_mapped_user_role_is_the_object_id_user", "a role mapped to internal_user names its user",
                  "data.regate.identity.user_id", asif.token(user, path), '"user-object-1"')
    if p.role_mappings.value:
        return
    # The roles claim alone, with the config's own (empty) mappings: it maps to nothing.
    plain = b.as_if("if_roles_claim", f"{p.roles_field.key} as if {roles.name}", (), assumed, roles_field=roles)
    plain.add_rule("test_unmapped_roles_map_to_nothing", "roles without role_mappings",
                   "data.regate.identity.mapped_roles", plain.token(roles.put({}, [ADMIN_ROLE]), path), "set()")


def _user_roles(b, path: str) -> None:
    p = b.policy
    if p.user_allowed_roles.value:
        return
    claim, assumed = _claim(b, "user_roles_field")
    asif = b.as_if("if_user_allowed_roles", f"{p.user_allowed_roles.key} as if [{USER_ROLE}]",
                   (("data.regate.roles.user_allowed_roles", frozenset({USER_ROLE})),), assumed,
                   user_roles_field=claim, user_allowed_roles=(USER_ROLE,))
    access_testcases.user_roles(asif, path)


def _role_models(b, path: str) -> None:
    p = b.policy
    if p.role_models.value:
        return
    asif = b.as_if("if_role_models", f"{p.role_models.key} as if team: [{MODEL}]",
                   (("data.regate.models._role_models", {"team": [MODEL]}),))
    doc = asif.token(asif.claims_for("team"), path, teams={TEAM: []})
    doc["request"]["model"] = OTHER_MODEL
    asif.add("test_team_role_limited_to_its_models", "role_permissions models", doc, False, 403, "model_not_allowed")


def _scopes(b, path: str) -> None:
    p = b.policy
    if p.enforce_scopes.value:
        return
    asif = b.as_if("if_scopes_enforced", f"{p.enforce_scopes.key} as if true, with the config's (no) scope mappings",
                   (("data.regate.models.enforce_scopes", True),))
    doc = asif.token(dict(asif.claims_for("team"), scope="openid"), path, teams={TEAM: []})
    doc["request"]["model"] = MODEL
    asif.add("test_token_without_mapped_scope_may_use_no_model", "no scope maps to a model", doc, False, 403,
             "model_not_allowed")


def add_budget_cases(b) -> None:
    """The user's and the end user's budgets, where the config's tokens have no such principal."""
    p = b.policy
    if not budget_testcases.has_user_tokens(b):
        claim, assumed = b.assume("user_field", "user_claim")
        overrides = (("data.regate.teams.enforce_models", False), ("data.regate.teams.default_team", None),
                     ("data.regate.users.checked_by_config", False), ("data.regate.email_domains.enabled", False))
        user_routes = p.routes["internal_user"]
        if budget_testcases.PATH not in user_routes.value.exact:
            overrides += (("data.regate.tables.routes.internal_user.exact", {budget_testcases.PATH: True}),)
            user_routes = replace(user_routes, value=expand((budget_testcases.PATH,)))
        budget_testcases.user(b.as_if("if_user_token", f"as if tokens named a user by a claim, and no team, and users "
                                      f"might call {budget_testcases.PATH}", overrides, assumed, user_field=claim,
                                      email_field=None, team_id_default=None, enforce_team_models=False,
                                      user_id_upsert=False, routes={**p.routes, "internal_user": user_routes}))
    claim, assumed = b.assume("end_user_field")
    asif = b.as_if("if_end_user_claim", f"{p.end_user_field.key} as if {claim.name}", (), assumed,
                   end_user_field=claim) if assumed else b
    budget_testcases.end_user(asif)


def custom_policies(b) -> None:
    """The custom checks on a stand-in module in place of the config's own (their tests test those):
    a deny object denies with its code and status, a malformed one as custom_denial_malformed."""
    path = b.path_for("team")
    if path is None or b.policy.team_field.value is None or not b.policy.jwt_enabled.value:
        return
    doc = b.token(b.claims_for("team"), path, teams={TEAM: []})

    def stand_in(deny: list) -> tuple:
        return (("data.regate.custom", {"regate_test": {"deny": deny}}),
                ("data.regate.custom_checks.modules", ["regate_test"]))

    asif = b.as_if("if_custom_policy", "custom_policies as if one module denied", ())
    denial = {"code": "regate_test_denied", "message": "denied by the stand-in", "status": 403}
    asif.add("test_custom_denial_denies_with_its_code", "a custom policy's deny object", doc, False, 403,
             "regate_test_denied", overrides=stand_in([denial]))
    asif.add("test_malformed_custom_denial_is_500", "a deny object without a code", doc, False, 500,
             "custom_denial_malformed", overrides=stand_in([{"message": "no code", "status": 403}]))
