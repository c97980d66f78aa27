"""The enforcer's view of a principal's budget (enforcer.budgets) on a real store: its own spend
counts at once, the store's once committed, never twice; the facts the policy gets."""

from __future__ import annotations

from regate.enforcer.budgets import Budgets
from regate.enforcer.credentials import Credential
from regate.enforcer.store import GLOBAL, Store
from tests.store.records import make_record


def budgets(store: Store, **kw) -> Budgets:
    options = dict(team_field="team_id", user_fields=("sub", "email"), end_user_field="customer",
                   proxy_budget=False, end_user_default_budget=False, ttl=60.0)
    return Budgets(store, **{**options, **kw})


def test_principals_are_derived_as_the_policy_derives_them(store: Store):
    b = budgets(store)
    jwt = Credential("jwt", claims={"team_id": "t1", "email": "a@example.com", "customer": "c1"})
    assert b.principals(jwt) == [("team", "t1"), ("user", "a@example.com"), ("end_user", "c1"), GLOBAL]
    key = Credential("virtual_key", key={"user_id": "u1", "team_id": None, "org_id": None, "models": []}, key_hash="h1")
    assert b.principals(key) == [("key", "h1"), ("user", "u1"), GLOBAL]
    assert b.principals(Credential("master_key")) == []


def test_own_spend_counts_at_once_and_exactly_once_after_the_commit(store: Store):
    store.set_limits("team", "t1", {"max_budget_nanos": 1000, "rpm_limit": 5})
    b = budgets(store)
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
        "team": {"id": "t1", "spend_nanos": 300, "max_budget_nanos": 1000, "reset_at": None}}


def test_principals_without_limits_give_no_facts_but_config_budgets_do(store: Store):
    b = budgets(store, proxy_budget=True, end_user_default_budget=True)
    standing = b.standing([("team", "free"), ("end_user", "c9"), GLOBAL])
    assert set(standing) == {("end_user", "c9"), GLOBAL}
    assert b.facts(standing) == {"end_user": {"id": "c9", "spend_nanos": 0, "max_budget_nanos": None, "reset_at": None},
                                 "proxy": {"spend_nanos": 0, "max_budget_nanos": None, "reset_at": None}}
