"""The enforcer's view of a principal's budget (enforcer.budgets) on a real store: its own spend
counts at once, the store's once committed, never twice; the facts the policy gets."""

from __future__ import annotations

import textwrap

from regate import compiler
from regate.enforcer.budgets import Budgets
from regate.enforcer.credentials import Credential, Facts
from regate.enforcer.store import GLOBAL, Store
from regate.enforcer.team_facts import TeamFacts
from tests.store.records import make_record

CONFIG = """\
general_settings:
  enable_jwt_auth: true
  litellm_jwtauth:
    team_id_jwt_field: team_id
    team_ids_jwt_field: groups
    user_id_jwt_field: sub
    user_email_jwt_field: email
    end_user_id_jwt_field: customer
    issuers:
      - {issuer: "https://b.example", audience: x, end_user_id_jwt_field: client}
"""


def budgets(store: Store, tmp_path, **kw) -> Budgets:
    (tmp_path / "c.yaml").write_text(textwrap.dedent(CONFIG))
    policy = compiler.load_config(tmp_path / "c.yaml").policy
    facts = Facts(store, policy, teams=TeamFacts(store, policy))
    options = dict(user_id=facts.user_id, proxy_budget=False, end_user_default_budget=False, ttl=60.0)
    return Budgets(store, policy, **{**options, **kw})


def test_principals_are_derived_as_the_policy_derives_them(store: Store, tmp_path):
    b = budgets(store, tmp_path)
    jwt = Credential("jwt", claims={"team_id": "t1", "groups": ["t2"], "email": "a@example.com", "customer": "c1"})
    # The teams are those the store has among the credential's (facts.teams): the policy selects one.
    assert b.principals(jwt, ["t1", "t2"]) == [("team", "t1"), ("team", "t2"), ("user", "a@example.com"),
                                                ("end_user", "c1"), GLOBAL]
    other = Credential("jwt", claims={"sub": "u9", "customer": "c1", "client": "c2"}, issuer="https://b.example")
    assert b.principals(other) == [("user", "u9"), ("end_user", "c2"), GLOBAL]  # the issuer's own end-user claim
    key = Credential("virtual_key", key={"user_id": "u1", "team_id": "t1", "org_id": None, "models": []}, key_hash="h1")
    assert b.principals(key, ["t1"]) == [("key", "h1"), ("team", "t1"), ("user", "u1"), GLOBAL]
    assert b.principals(Credential("master_key")) == []


def test_rate_limits_count_for_the_team_the_request_runs_as(store: Store, tmp_path):
    for team in ("t1", "t2"):
        store.set_limits("team", team, {"max_budget_nanos": 1000, "rpm_limit": 5})
    store.set_limits("user", "u1", {"rpm_limit": 7})
    b = budgets(store, tmp_path)
    standing = b.standing([("team", "t1"), ("team", "t2"), ("user", "u1"), GLOBAL])
    assert set(b.facts(standing)["teams"]) == {"t1", "t2"}  # the policy reads the selected team's
    subject = {"team_id": "t2", "user_id": "u1", "end_user_id": None}
    assert set(b.of_subject(standing, subject)) == {("team", "t2"), ("user", "u1")}
    assert set(b.of_subject(standing, dict(subject, team_id=None, user_id="u2"))) == set()


def test_own_spend_counts_at_once_and_exactly_once_after_the_commit(store: Store, tmp_path):
    store.set_limits("team", "t1", {"max_budget_nanos": 1000, "rpm_limit": 5})
    b = budgets(store, tmp_path)
    team = [("team", "t1")]
    assert b.standing(team)[("team", "t1")].spend_nanos == 0
    record = make_record("r1", spend_nanos=300, team_id="t1")
    b.spent(record)
    assert b.standing(team)[("team", "t1")].spend_nanos == 300  # not written yet: counted from memory
    store.record_spend([record])
    assert b.standing(team)[("team", "t1")].spend_nanos == 300  # written, cached read not yet renewed
    b.committed([record])  # the writer's report: the store has it, memory lets go, the cache is renewed
    standing = b.standing(team)[("team", "t1")]
    assert standing.spend_nanos == 300 and standing.rpm_limit == 5
    assert b.facts({("team", "t1"): standing}) == {
        "teams": {"t1": {"spend_nanos": 300, "max_budget_nanos": 1000, "reset_at": None}}}


def test_principals_without_limits_give_no_facts_but_config_budgets_do(store: Store, tmp_path):
    b = budgets(store, tmp_path, proxy_budget=True, end_user_default_budget=True)
    standing = b.standing([("team", "free"), ("end_user", "c9"), GLOBAL])
    assert set(standing) == {("end_user", "c9"), GLOBAL}
    assert b.facts(standing) == {"end_user": {"id": "c9", "spend_nanos": 0, "max_budget_nanos": None, "reset_at": None},
                                 "proxy": {"spend_nanos": 0, "max_budget_nanos": None, "reset_at": None}}
