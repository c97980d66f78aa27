"""Expected decisions about roles, scopes and issuers (role_mappings and object ids,
role_permissions, user_allowed_roles, scope_mappings, the claim fields of issuers entries),
added to a config's generated tests by testcases._Builder."""

from __future__ import annotations

from .model import MAX_TEAMS_PER_TOKEN

TEAM = "team-a"  # the builder's team (testcases.TEAM)
OUTSIDE_MODEL = "regate-test-unlisted-model"


def add_cases(b) -> None:
    """Add the role and scope cases that `b`'s config implies (b: testcases._Builder)."""
    path = path_of(b, "team")
    if path is None:
        return
    if b.policy.role_mappings.value:
        _role_mappings(b)
    if b.policy.role_models.value:
        _role_models(b)
    if b.policy.user_allowed_roles.value:
        user_roles(b, path)
    if b.policy.enforce_scopes.value:
        _scopes(b, path)
    for issuer in b.policy.issuers:
        _issuer_fields(b, issuer, path)


def path_of(b, role: str) -> str | None:
    exact = b.policy.routes[role].value.exact
    return next((p for p in ("/v1/chat/completions", "/chat/completions", "/key/generate", "/team/new") if p in exact),
                exact[0] if exact else None)


def _with_roles(b, claims: dict, roles) -> dict:
    return b.with_claim(claims, b.policy.roles_field.value, roles)


def _role_mappings(b) -> None:
    p = b.policy
    why = b.cite(p.role_mappings)
    by_role = {}
    for mapping in p.role_mappings.value:
        by_role.setdefault(mapping.internal_role, mapping.role)
    if "team" in by_role and p.object_id_field.value and (path := path_of(b, "team")):
        claims = b.with_claim(_with_roles(b, b.claims_for("internal_user"), [by_role["team"]]), p.object_id_field.value, TEAM)
        b.add("test_mapped_team_role_runs_as_the_object_id_team", why, b.token(claims, path, teams={TEAM: []}),
              True, 200, team=TEAM)
        as_string = b.with_claim(claims, p.roles_field.value, f"openid {by_role['team']}")
        b.add("test_mapped_roles_as_a_space_separated_string", why, b.token(as_string, path, teams={TEAM: []}),
              True, 200, team=TEAM)
    if "internal_user" in by_role and p.object_id_field.value and (path := path_of(b, "internal_user")):
        claims = b.with_claim(_with_roles(b, {}, [by_role["internal_user"]]), p.object_id_field.value, "user-object-1")
        b.add_rule("test_mapped_user_role_is_the_object_id_user", why, "data.regate.identity.user_id",
                   b.token(claims, path), '"user-object-1"')
    if "proxy_admin" in by_role and (path := path_of(b, "proxy_admin")):
        claims = _with_roles(b, {}, [by_role["proxy_admin"]])
        b.add("test_mapped_proxy_admin_role_is_admin", why, b.token(claims, path), True, 200)
    if path := path_of(b, "team"):
        bad = _with_roles(b, b.claims_for("internal_user"), {"role": "x"})
        b.add("test_roles_claim_of_wrong_type_is_401", b.cite(p.roles_field), b.token(bad, path), False, 401, "invalid_claims")


def _role_models(b) -> None:
    p = b.policy
    for grant in p.role_models.value:
        if grant.name not in ("team", "internal_user") or not grant.models or not (path := path_of(b, grant.name)):
            continue
        claims = b.claims_for(grant.name)
        if grant.name == "internal_user" and (not b.derived_user(claims) or p.team_id_default.value is not None
                                              or p.enforce_team_models.value):
            continue  # such a token is no internal user here
        label = "team" if grant.name == "team" else "user"
        why = f"general_settings.role_permissions models ({b.source}:{grant.origin.line})"
        inside = b.token(claims, path, teams={TEAM: []} if grant.name == "team" else None)
        inside["request"]["model"] = grant.models[0]
        b.add(f"test_{label}_role_may_use_its_models", why, inside, True, 200)
        outside = b.token(claims, path, teams={TEAM: []} if grant.name == "team" else None)
        outside["request"]["model"] = OUTSIDE_MODEL
        b.add(f"test_{label}_role_limited_to_its_models", why, outside, False, 403, "model_not_allowed")


def user_roles(b, path: str) -> None:
    p = b.policy
    why = b.cite(p.user_allowed_roles)
    claims = b.claims_for("team")
    allowed = b.with_claim(claims, p.user_roles_field.value, [p.user_allowed_roles.value[0]])
    b.add("test_token_with_an_allowed_user_role", why, b.token(allowed, path, teams={TEAM: []}), True, 200)
    other = b.with_claim(claims, p.user_roles_field.value, ["regate-test-other-role"])
    b.add("test_token_without_an_allowed_user_role_is_403", why, b.token(other, path, teams={TEAM: []}),
          False, 403, "role_not_allowed")
    bare = b.with_claim(claims, p.user_roles_field.value, None)
    b.add("test_token_without_user_roles_is_403", why, b.token(bare, path, teams={TEAM: []}), False, 403,
          "role_not_allowed")


def _scopes(b, path: str) -> None:
    p = b.policy
    why = b.cite(p.scope_mappings)
    grant = next((g for g in p.scope_mappings.value if g.models), None)
    claims = b.claims_for("team")

    def doc(scope: str, model: str) -> dict:
        token = b.token(dict(claims, scope=scope), path, teams={TEAM: []})
        token["request"]["model"] = model
        return token

    if grant is not None:
        b.add("test_scope_grants_its_models", why, doc(f"openid {grant.name}", grant.models[0]), True, 200)
        b.add("test_scope_grants_no_other_model", why, doc(f"openid {grant.name}", OUTSIDE_MODEL), False, 403,
              "model_not_allowed")
    model = grant.models[0] if grant else OUTSIDE_MODEL
    b.add("test_token_without_mapped_scope_may_use_no_model", b.cite(p.enforce_scopes), doc("openid", model),
          False, 403, "model_not_allowed")


def _issuer_fields(b, issuer, path: str) -> None:
    """The entry's own team (else user) claim counts for its tokens only; its own team list is held
    to the same types."""
    slug = "".join(c if c.isalnum() else "_" for c in issuer.issuer.split("://")[-1]).strip("_")

    def issued(claims: dict, **facts) -> dict:
        doc = b.token(claims, path, **facts)
        doc["credential"]["issuer"] = issuer.issuer
        return doc

    if "team_ids_field" in issuer.fields:
        field = issuer.fields["team_ids_field"]
        for name, value in (("not_a_list", TEAM), ("too_long", [f"team-{i}" for i in range(MAX_TEAMS_PER_TOKEN + 1)])):
            b.add(f"test_issuer_{slug}_team_list_{name}_is_401", field.cite(b.source),
                  issued(b.with_claim({}, field.value, value)), False, 401, "invalid_claims")
    attr = "team_field" if "team_field" in issuer.fields else "user_field" if "user_field" in issuer.fields else None
    if attr is None:
        return
    field = issuer.fields[attr]
    claims = b.with_claim(b.claims_for("internal_user"), field.value, TEAM)
    doc = issued(claims, teams={TEAM: []})
    if attr == "team_field":
        doc.setdefault("facts", {})["teams"] = {TEAM: []}
        b.add(f"test_issuer_{slug}_names_the_team_by_its_own_claim", field.cite(b.source), doc, True, 200, team=TEAM)
        return
    doc["facts"] = {"user_id": TEAM, "user_exists": True} if b.policy.checks_user_existence else doc.get("facts")
    doc = {k: v for k, v in doc.items() if v is not None}
    b.add(f"test_issuer_{slug}_names_the_user_by_its_own_claim", field.cite(b.source), doc, True, 200)
    if b.policy.checks_user_existence:
        unknown = dict(doc, facts={"user_id": TEAM, "user_exists": False})
        if b.policy.user_id_upsert.value:
            b.add(f"test_issuer_{slug}_unknown_user_is_upserted", field.cite(b.source), unknown, True, 200, upsert=True)
        else:
            b.add(f"test_issuer_{slug}_unknown_user_is_401", field.cite(b.source), unknown, False, 401, "user_not_found")
