"""Expected decisions about budgets (input.facts.budgets: a key's, the team's the request runs as,
a user's, an end user's, the proxy's), added to a config's generated tests by testcases._Builder."""

from __future__ import annotations

from regate.common.money import usd_to_nanos

TEAM = "team-a"  # the builder's team (testcases.TEAM)
TEAM_B = "team-b"
TEAM_C = "team-c"
BLOCKED = "team-blocked"  # blocked in the builder's state (testcases.BLOCKED_TEAM)
USER = "user-1"  # the builder's user (testcases.USER)
PATH = "/v1/chat/completions"
BUDGET = 5_000_000  # nano-USD
SPENT = {"spend_nanos": BUDGET, "max_budget_nanos": BUDGET, "reset_at": None}
UNDER = dict(SPENT, spend_nanos=BUDGET - 1)


def add_cases(b) -> None:
    """Add the budget cases that `b`'s config implies (b: testcases._Builder)."""
    if PATH not in b.policy.routes["team"].value.exact:
        return
    _key_and_team(b)
    _order(b)
    if b.policy.jwt_enabled.value:
        _tokens(b)
        if b.policy.team_ids_field.value is not None:
            _selected_team(b)
        user(b)
    _proxy_and_end_user(b)


def _key_doc(budgets: dict, *, models: list[str] | None = None, model: str | None = None,
             header: str | None = None) -> dict:
    """A request of a virtual key of TEAM, with these budget facts."""
    key = {"user_id": None, "team_id": TEAM, "org_id": None, "models": models or []}
    request = {"method": "POST", "path": PATH}
    if model is not None:
        request["model"] = model
    if header is not None:
        request["requested_team"] = header
    return {"request": request, "credential": {"type": "virtual_key", "key": key},
            "facts": {"teams": {TEAM: []}, "budgets": budgets}}


def _with_budgets(doc: dict, budgets: dict, header: str | None = None) -> dict:
    doc.setdefault("facts", {})["budgets"] = budgets
    if header is not None:
        doc["request"]["requested_team"] = header
    return doc


def _key_and_team(b) -> None:
    why = "/key/generate max_budget: spend that reached the budget stops the key"
    b.add("test_key_over_its_budget_is_400", why, _key_doc({"key": SPENT}), False, 400, "budget_exceeded")
    b.add("test_key_under_its_budget_may_spend", why, _key_doc({"key": UNDER}), True, 200)
    why = "/team/new max_budget: a team's key spends the team's budget"
    b.add("test_team_key_over_team_budget_is_400", why, _key_doc({"teams": {TEAM: SPENT}}), False, 400,
          "budget_exceeded", team=TEAM)
    b.add("test_team_key_under_team_budget_may_spend", why, _key_doc({"teams": {TEAM: UNDER}}), True, 200, team=TEAM)
    b.add("test_budget_facts_of_another_team_do_not_count", "only the budget of the team the request runs as applies",
          _key_doc({"teams": {"someone-else": SPENT}}), True, 200, team=TEAM)


def _order(b) -> None:
    """A request refused for its team or its model is not reported as over budget."""
    why = "budget_exceeded comes after every access check"
    b.add("test_team_not_granted_comes_before_the_budget", why, _key_doc({"key": SPENT}, header="team-other"),
          False, 403, "team_not_granted")
    b.add("test_model_refusal_comes_before_the_budget", why,
          _key_doc({"key": SPENT, "teams": {TEAM: SPENT}}, models=["model-a"], model="model-b"),
          False, 403, "model_not_allowed")


def _tokens(b) -> None:
    p = b.policy
    if p.team_field.value is None:
        return
    claims = b.claims_for("team")
    why = "/team/new max_budget: a team token spends its team's budget"
    b.add("test_team_token_over_team_budget_is_400", why, _with_budgets(b.token(claims, PATH), {"teams": {TEAM: SPENT}}),
          False, 400, "budget_exceeded", team=TEAM)
    blocked = b.with_claim(claims, p.team_field.value, BLOCKED)
    b.add("test_blocked_team_comes_before_the_budget", "budget_exceeded comes after every access check",
          _with_budgets(b.token(blocked, PATH), {"teams": {BLOCKED: SPENT}}), False, 403, "team_blocked")


def _selected_team(b) -> None:
    """A token with several teams spends the budget of the team its request runs as."""
    p = b.policy
    why = f"{b.cite(p.team_ids_field)}: the selected team's budget"
    base = b.claims_for("internal_user")

    def groups(budgets: dict, header: str | None = None) -> dict:
        doc = b.token(b.with_claim(base, p.team_ids_field.value, [TEAM_B, TEAM_C]), PATH)
        return _with_budgets(doc, budgets, header)

    b.add("test_team_list_spends_the_first_teams_budget", why, groups({"teams": {TEAM_B: SPENT}}),
          False, 400, "budget_exceeded", team=TEAM_B)
    b.add("test_team_list_header_spends_the_selected_teams_budget", why,
          groups({"teams": {TEAM_B: SPENT, TEAM_C: UNDER}}, header=TEAM_C), True, 200, team=TEAM_C)
    b.add("test_team_list_header_selecting_a_team_over_budget_is_400", why,
          groups({"teams": {TEAM_B: UNDER, TEAM_C: SPENT}}, header=TEAM_C), False, 400, "budget_exceeded", team=TEAM_C)
    b.add("test_team_list_other_teams_budget_does_not_count", why, groups({"teams": {TEAM_C: SPENT}}),
          True, 200, team=TEAM_B)


def has_user_tokens(b) -> bool:
    """Whether the config's tokens may run as an internal user named by the user claim, on PATH."""
    p = b.policy
    return (b.derived_user(b.claims_for("internal_user")) == USER and p.team_id_default.value is None
            and not p.enforce_team_models.value and PATH in p.routes["internal_user"].value.exact)


def user(b) -> None:
    """An internal user's token spends its user's budget (a team's token its team's)."""
    if not has_user_tokens(b):
        return
    claims = b.claims_for("internal_user")
    why = "/user/new max_budget: a token without a team spends its user's budget"
    b.add("test_user_over_its_budget_is_400", why, _with_budgets(b.token(claims, PATH), {"user": dict(SPENT, id=USER)}),
          False, 400, "budget_exceeded")
    b.add("test_user_budget_facts_of_another_user_fail_closed", "user budget facts count only for the user the policy derives",
          _with_budgets(b.token(claims, PATH), {"user": dict(UNDER, id="someone-else")}), False, 400, "budget_exceeded")


def _proxy_and_end_user(b) -> None:
    budgets = b.config.budgets
    if budgets.proxy_max_budget.value is not None:
        why = b.cite(budgets.proxy_max_budget)
        limit = usd_to_nanos(budgets.proxy_max_budget.value)
        b.add("test_proxy_over_its_budget_is_400", why, _key_doc({"proxy": {"spend_nanos": limit}}),
              False, 400, "budget_exceeded")
        if limit > 0:
            b.add("test_proxy_under_its_budget_may_spend", why, _key_doc({"proxy": {"spend_nanos": limit - 1}}), True, 200)
        master = {"request": {"method": "POST", "path": PATH}, "credential": {"type": "master_key"},
                  "facts": {"budgets": {"proxy": {"spend_nanos": limit}}}}
        b.add("test_admin_spends_no_budget", "proxy admins spend no budget", master, True, 200)
    p = b.policy
    if p.jwt_enabled.value and p.end_user_field.value and budgets.max_end_user_budget.value is not None:
        why = b.cite(budgets.max_end_user_budget)
        limit = usd_to_nanos(budgets.max_end_user_budget.value)
        claims = b.with_claim(b.claims_for("team"), p.end_user_field.value, "end-user-1")
        doc = _with_budgets(b.token(claims, PATH), {"end_user": {"id": "end-user-1", "spend_nanos": limit}})
        b.add("test_end_user_over_default_budget_is_400", why, doc, False, 400, "budget_exceeded")


def end_user(b) -> None:
    """A team token's end user spends the end user's own budget; facts about another end user deny."""
    p = b.policy
    if p.end_user_field.value is None or p.team_field.value is None or PATH not in p.routes["team"].value.exact:
        return
    claims = b.with_claim(b.claims_for("team"), p.end_user_field.value, "end-user-1")
    own = dict(SPENT, id="end-user-1", reset_at="2026-12-31T00:00:00Z")
    b.add("test_end_user_over_its_budget_is_400", "/customer/new max_budget: the end user's own budget",
          _with_budgets(b.token(claims, PATH), {"end_user": own}), False, 400, "budget_exceeded")
    b.add("test_end_user_budget_facts_of_another_end_user_fail_closed",
          "end-user budget facts count only for the end user the policy derives",
          _with_budgets(b.token(claims, PATH), {"end_user": dict(UNDER, id="someone-else")}), False, 400,
          "budget_exceeded")
