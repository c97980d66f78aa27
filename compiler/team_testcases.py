"""Expected decisions about teams (team lists, the x-litellm-team-id header, team model access,
default and upserted teams), added to a config's generated tests by testcases._Builder."""

from __future__ import annotations

from .model import MAX_TEAMS_PER_TOKEN

TEAM = "team-a"  # the builder's team (testcases.TEAM)
TEAM_B = "team-b"
TEAM_C = "team-c"
BLOCKED = "team-blocked"  # blocked in the builder's state (testcases.BLOCKED_TEAM)
MISSING = "team-missing"
ALIAS = "Team A"


def add_cases(b) -> None:
    """Add the team cases that `b`'s config implies (b: testcases._Builder)."""
    p = b.policy
    path = _team_path(b)
    if path is None:
        return
    _header(b, path)
    if p.team_ids_field.value is not None:
        _team_lists(b, path)
    if p.enforce_team_models.value:
        _enforced(b, path)
    if p.team_id_default.value is not None:
        default_team(b, path)
    if p.team_alias_field.value is not None:
        alias_claim(b, path)


def _team_path(b) -> str | None:
    for candidate in ("/v1/chat/completions", "/chat/completions"):
        if candidate in b.policy.routes["team"].value.exact:
            return candidate
    return None


def _with_model(doc: dict, model: str) -> dict:
    doc["request"]["model"] = model
    return doc


def _with_header(doc: dict, team: str) -> dict:
    doc["request"]["requested_team"] = team
    return doc


def _header(b, path: str) -> None:
    why = "x-litellm-team-id selects one of the credential's teams"
    claims = b.claims_for("team")
    b.add("test_team_header_naming_the_tokens_team", why, _with_header(b.token(claims, path), TEAM), True, 200, team=TEAM)
    b.add("test_team_header_naming_another_team_is_403", why, _with_header(b.token(claims, path), "team-other"),
          False, 403, "team_not_granted")
    by_alias = _with_header(b.token(claims, path), ALIAS)
    by_alias["facts"]["team_aliases"] = {ALIAS: [TEAM]}
    b.add("test_team_header_by_unique_alias", why, by_alias, True, 200, team=TEAM)
    shared = _with_header(b.token(claims, path), ALIAS)
    shared["facts"]["team_aliases"] = {ALIAS: [TEAM, "team-z"]}
    b.add("test_team_header_by_ambiguous_alias_is_403", "an alias two teams share selects neither", shared,
          False, 403, "team_not_granted")
    master = {"request": {"method": "POST", "path": path, "requested_team": TEAM}, "credential": {"type": "master_key"}}
    b.add("test_team_header_with_master_key_is_403", "the master key grants no team", master, False, 403, "team_not_granted")


def _team_lists(b, path: str) -> None:
    p = b.policy
    why = b.cite(p.team_ids_field)
    base = b.claims_for("internal_user")

    def groups(teams, *, model=None, header=None, facts=None) -> dict:
        doc = b.token(b.with_claim(base, p.team_ids_field.value, teams), path, teams=facts)
        if model:
            _with_model(doc, model)
        if header:
            _with_header(doc, header)
        return doc

    b.add("test_team_list_runs_as_its_first_team", why, groups([TEAM_B, TEAM_C]), True, 200, team=TEAM_B)
    b.add("test_team_list_header_selects_another_team", why, groups([TEAM_B, TEAM_C], header=TEAM_C), True, 200,
          team=TEAM_C)
    b.add("test_team_list_skips_a_blocked_first_team", "a blocked team does not block the token's other teams",
          groups([BLOCKED, TEAM_C]), True, 200, team=TEAM_C)
    b.add("test_team_list_of_blocked_teams_reports_the_first", "no team usable: the first team's own denial",
          groups([BLOCKED]), False, 403, "team_blocked")
    b.add("test_team_list_header_selecting_a_blocked_team_is_403", "the selected team is checked",
          groups([TEAM_B, BLOCKED], header=BLOCKED), False, 403, "team_blocked")
    if not b.role_or_scope_models:
        limited = {TEAM_B: ["model-a"], TEAM_C: []}
        b.add("test_team_list_runs_as_the_first_team_with_the_model", "the first team that may use the requested model",
              groups([TEAM_B, TEAM_C], model="model-b", facts=limited), True, 200, team=TEAM_C)
        only_a = {TEAM_B: ["model-a"], TEAM_C: ["model-a"]}
        b.add("test_team_list_without_the_model_is_403", "no team may use the model",
              groups([TEAM_B, TEAM_C], model="model-b", facts=only_a), False, 403, "model_not_allowed")
    with_id = b.token(b.with_claim(b.claims_for("team"), p.team_ids_field.value, [TEAM_B]), path)
    b.add("test_team_id_claim_comes_before_the_team_list", f"{b.cite(p.team_field)} first", with_id, True, 200, team=TEAM)
    for name, value in [("not_a_list", TEAM_B), ("with_a_number", [TEAM_B, 7]), ("with_an_empty_id", [""]),
                        ("too_long", [f"team-{i}" for i in range(MAX_TEAMS_PER_TOKEN + 1)])]:
        b.add(f"test_team_list_{name}_is_401", why, groups(value), False, 401, "invalid_claims")


def _enforced(b, path: str) -> None:
    p = b.policy
    why = b.cite(p.enforce_team_models)
    unknown = b.token(b.claims_for("team"), path, teams={TEAM: None})
    if p.team_id_upsert.value:
        b.add("test_unknown_team_is_upserted", b.cite(p.team_id_upsert), unknown, True, 200, team=TEAM, upsert_team=True)
        admin_path = _admin_path(b)
        if admin_path:
            admin = b.token(b.with_claim(b.claims_for("proxy_admin"), p.team_field.value, TEAM), admin_path,
                            teams={TEAM: None})
            b.add("test_admin_token_never_upserts_a_team", "admin tokens are not team tokens", admin, True, 200)
    else:
        b.add("test_unknown_team_is_403", why, unknown, False, 403, "team_not_found")
    user = b.claims_for("internal_user")
    if p.team_id_default.value is None and b.derived_user(user):
        b.add("test_token_without_team_is_403", why, b.token(user, path), False, 403, "team_not_found")
    if p.team_ids_field.value is not None:
        doc = b.token(b.with_claim(user, p.team_ids_field.value, [MISSING, TEAM_C]), path,
                      teams={MISSING: None})
        b.add("test_team_list_runs_as_the_first_team_in_the_store", why, doc, True, 200, team=TEAM_C)


def _admin_path(b) -> str | None:
    exact = b.policy.routes["proxy_admin"].value.exact
    return next((p for p in ("/key/generate", "/team/new", "/key/info") if p in exact), exact[0] if exact else None)


def default_team(b, path: str) -> None:
    p = b.policy
    default = p.team_id_default.value
    claims = b.claims_for("internal_user")
    b.add("test_token_without_team_claim_runs_as_the_default_team", b.cite(p.team_id_default),
          b.token(claims, path, teams={default: []}), True, 200, team=default)


def alias_claim(b, path: str) -> None:
    p = b.policy
    claims = b.with_claim(b.claims_for("internal_user"), p.team_alias_field.value, ALIAS)
    doc = b.token(claims, path, teams={TEAM: []})
    doc["facts"]["team_aliases"] = {ALIAS: [TEAM]}
    b.add("test_team_alias_claim_resolves_to_its_team", b.cite(p.team_alias_field), doc, True, 200, team=TEAM)
