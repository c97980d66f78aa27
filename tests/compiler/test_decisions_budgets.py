"""Decision tables for budgets (issue 14) on a real OPA, with many teams per token (issues 12
and 13): a token spends the budget of the team its request runs as (the first usable team,
or the one x-litellm-team-id selects), never another of its teams'; budget_exceeded comes
after every access check.

Facts are what the enforcer sends: `teams` (the teams the store has, with their models) and
`budgets` (spend in the current period per principal that has a budget; `teams` by id, for
every team the credential may run as). Amounts are nano-USD.
"""

from __future__ import annotations

import pytest

from .test_decisions import check, jwt
from .test_decisions_teams import KNOWN_USER, USER, facts, header, key, request

OVER = {"spend_nanos": 5_000_000_000, "max_budget_nanos": 5_000_000_000, "reset_at": "2026-12-01T00:00:00Z"}
UNDER = {"spend_nanos": 1_000_000, "max_budget_nanos": 5_000_000_000, "reset_at": None}
GROUPS = dict(USER, groups=["team-b", "team-c"])
LIMITED = {"team-b": ["gpt-4o-mini"], "team-c": ["azure-gpt-4o"]}


def spent(teams=None, **principals):
    """facts.budgets: `teams` by id, and the other principals as given."""
    return dict(principals, teams=teams) if teams is not None else principals


def groups(budgets, *, team=None, model=None, models=None, claims=GROUPS):
    doc = jwt(claims, model=model, facts=facts("team-b", "team-c", models=models, budgets=budgets))
    return header(doc, team) if team is not None else doc


REGATE_TABLE = [
    # (label, input, allow, status, first reason, team the request runs as)
    ("groups: the first team over its budget", groups(spent({"team-b": OVER})),
     False, 400, "budget_exceeded", "team-b"),
    ("groups: the header selects a team under its budget", groups(spent({"team-b": OVER, "team-c": UNDER}), team="team-c"),
     True, 200, None, "team-c"),
    ("groups: the header selects the team over its budget", groups(spent({"team-b": UNDER, "team-c": OVER}), team="team-c"),
     False, 400, "budget_exceeded", "team-c"),
    ("groups: another team's spent budget does not count", groups(spent({"team-c": OVER})), True, 200, None, "team-b"),
    ("groups: the team the model selects spends its budget",
     groups(spent({"team-b": UNDER, "team-c": OVER}), model="azure-gpt-4o", models=LIMITED),
     False, 400, "budget_exceeded", "team-c"),
    ("groups: the model selects the team under budget",
     groups(spent({"team-b": OVER, "team-c": UNDER}), model="azure-gpt-4o", models=LIMITED), True, 200, None, "team-c"),
    # Every access check comes before the budget.
    ("groups: a team not granted, not over budget", groups(spent({"team-b": OVER}), team="team-x"),
     False, 403, "team_not_granted", None),
    ("groups: no team may use the model, not over budget",
     groups(spent({"team-b": OVER, "team-c": OVER}), model="other", models=LIMITED), False, 403, "model_not_allowed", "team-b"),
    ("groups: a blocked selected team, not over budget",
     groups(spent({"blocked-team": OVER}), team="blocked-team", claims=dict(USER, groups=["team-b", "blocked-team"])),
     False, 403, "team_blocked", "blocked-team"),
    ("a key over its own budget", request(key(), facts=facts("team-a", budgets=spent(key=OVER))),
     False, 400, "budget_exceeded", "team-a"),
    ("a key over its team's budget", request(key(), facts=facts("team-a", budgets=spent({"team-a": OVER}))),
     False, 400, "budget_exceeded", "team-a"),
    ("a key outside its models, not over budget",
     request(key(models=["gpt-4o-mini"]), model="azure-gpt-4o", facts=facts("team-a", budgets=spent(key=OVER))),
     False, 403, "model_not_allowed", "team-a"),
    ("budgets count on spending routes only", request(key(), path="/v1/models", facts=facts("team-a", budgets=spent(key=OVER))),
     True, 200, None, "team-a"),
    ("an internal user over its budget", jwt(USER, facts=dict(KNOWN_USER, budgets=spent(user=dict(OVER, id="u1")))),
     False, 400, "budget_exceeded", None),
    ("an internal user does not spend a team budget", jwt(USER, facts=dict(KNOWN_USER, budgets=spent({"team-b": OVER}))),
     True, 200, None, None),
    ("user budget facts of another user fail closed", jwt(USER, facts=dict(KNOWN_USER, budgets=spent(user=dict(UNDER, id="u2")))),
     False, 400, "budget_exceeded", None),
]


@pytest.mark.parametrize("label,doc,allow,status,reason,team", REGATE_TABLE, ids=[r[0] for r in REGATE_TABLE])
def test_regate_example_budgets(opa_for, label, doc, allow, status, reason, team):
    decision = opa_for("examples/regate").decide(doc)
    check(decision, allow, status, reason)
    assert decision["subject"]["team_id"] == team, decision


def test_the_message_names_the_selected_team_and_its_reset(opa_for):
    decision = opa_for("examples/regate").decide(groups(spent({"team-b": UNDER, "team-c": OVER}), team="team-c"))
    assert decision["message"] == ("Budget has been exceeded! Team=team-c Current cost: 5, Max budget: 5 "
                                   "(the budget resets at 2026-12-01T00:00:00Z)")


# cases/litellm-full: the proxy's max_budget (1000.50 USD) and max_end_user_budget (5 USD) from the config.
CLIENT = {"client_id": "team-a", "sub": "u1"}
PROXY = 1_000_500_000_000
FULL_TABLE = [
    ("the proxy under its budget", jwt(CLIENT, facts=facts("team-a", budgets=spent(proxy={"spend_nanos": PROXY - 1}))),
     True, 200, None, "team-a"),
    ("the proxy's budget reached", jwt(CLIENT, facts=facts("team-a", budgets=spent(proxy={"spend_nanos": PROXY}))),
     False, 400, "budget_exceeded", "team-a"),
    ("the team's budget comes before the proxy's",
     jwt(CLIENT, facts=facts("team-a", budgets=spent({"team-a": OVER}, proxy={"spend_nanos": PROXY}))),
     False, 400, "budget_exceeded", "team-a"),
    ("the master key spends no budget", request({"type": "master_key"}, facts={"budgets": spent(proxy={"spend_nanos": PROXY})}),
     True, 200, None, None),
]


@pytest.mark.parametrize("label,doc,allow,status,reason,team", FULL_TABLE, ids=[r[0] for r in FULL_TABLE])
def test_litellm_full_budgets(opa_for, label, doc, allow, status, reason, team):
    decision = opa_for("cases/litellm-full").decide(doc)
    check(decision, allow, status, reason)
    assert decision["subject"]["team_id"] == team, decision


def test_the_team_budget_is_reported_before_the_proxys(opa_for):
    doc = jwt(CLIENT, facts=facts("team-a", budgets=spent({"team-a": OVER}, proxy={"spend_nanos": PROXY})))
    assert opa_for("cases/litellm-full").decide(doc)["message"].startswith("Budget has been exceeded! Team=team-a ")


# budget_headroom_nanos: on an allow, the smallest max - spend over the budgets that apply (the
# decision cache reuses the allow while no spend grew as much); null when none applies or on a deny.
HEADROOM_TABLE = [
    ("the key's budget alone", "examples/regate", request(key(), facts=facts("team-a", budgets=spent(key=UNDER))),
     5_000_000_000 - 1_000_000),
    ("the smaller of the key's and its team's", "examples/regate",
     request(key(), facts=facts("team-a", budgets=spent({"team-a": dict(UNDER, spend_nanos=4_999_000_000)}, key=UNDER))),
     1_000_000),
    ("another team's budget does not count", "examples/regate",
     groups(spent({"team-b": UNDER, "team-c": dict(UNDER, spend_nanos=4_999_999_999)})), 5_000_000_000 - 1_000_000),
    ("an internal user's budget", "examples/regate",
     jwt(USER, facts=dict(KNOWN_USER, budgets=spent(user=dict(UNDER, id="u1")))), 5_000_000_000 - 1_000_000),
    ("no budget applies: no bound", "examples/regate",
     request(key(), path="/v1/models", facts=facts("team-a", budgets=spent(key=UNDER))), None),
    ("no budget facts: no bound", "examples/regate", request(key(), facts=facts("team-a")), None),
    ("a deny: no bound", "examples/regate", request(key(), facts=facts("team-a", budgets=spent(key=OVER))), None),
    ("the proxy's budget from the config", "cases/litellm-full",
     jwt(CLIENT, facts=facts("team-a", budgets=spent(proxy={"spend_nanos": PROXY - 7}))), 7),
    ("the master key spends no budget", "cases/litellm-full",
     request({"type": "master_key"}, facts={"budgets": spent(proxy={"spend_nanos": PROXY - 7})}), None),
]


@pytest.mark.parametrize("label,bundle,doc,headroom", HEADROOM_TABLE, ids=[r[0] for r in HEADROOM_TABLE])
def test_an_allow_reports_the_budget_headroom(opa_for, label, bundle, doc, headroom):
    assert opa_for(bundle).decide(doc)["budget_headroom_nanos"] == headroom
