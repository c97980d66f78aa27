"""The enforcer's view of a principal's budget (enforcer.budgets) on a real store: its own spend
counts at once, the store's once committed, never twice; committed spend joins the cached rows
without a read; the facts the policy gets."""

from __future__ import annotations

import textwrap
import time

from regate import compiler
from regate.common.durations import parse_duration
from regate.enforcer.budgets import Budgets
from regate.enforcer.credentials import Credential, Facts
from regate.enforcer.spend import SpendWriter
from regate.enforcer.store import GLOBAL, Store
from regate.enforcer.team_facts import TeamFacts
from tests.store.records import T0, make_record

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


class ReadLog:
    """The real store, plus a log of the principals each budget_state call read."""

    def __init__(self, store: Store):
        self._store = store
        self.reads: list[list[tuple[str, str]]] = []

    def budget_state(self, principals):
        principals = list(principals)
        self.reads.append(principals)
        return self._store.budget_state(principals)

    def __getattr__(self, name):
        return getattr(self._store, name)


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def spend_at(epoch: float, rid: str, nanos: int, **who):
    return make_record(rid, spend_nanos=nanos, offset_s=epoch - T0.timestamp(), **who)


def test_committed_spend_joins_the_cached_rows_without_a_read(store: Store, open_store, tmp_path):
    """The spend writer's commits update the cached rows: no read per commit, no spend counted
    twice; what other replicas spent shows at the next read, one ttl later."""
    store.set_limits("team", "t1", {"max_budget_nanos": 10_000, "budget_duration": "1h"})
    log, clock = ReadLog(store), Clock()
    writer = None
    b = budgets(log, tmp_path, clock=clock, ttl=0.5, writes=lambda: writer.writes)
    writer = SpendWriter(open_store(), flush_interval=0.01, spool_dir=tmp_path / "spool", on_commit=b.committed)
    team = [("team", "t1")]
    hour = parse_duration("1h").period_start(clock.now)
    assert b.standing(team)[("team", "t1")].spend_nanos == 0 and len(log.reads) == 1
    store.record_spend([spend_at(hour, "other-replica", 50, team_id="t1")])  # not this worker's writer
    writer.start()
    for i, nanos in enumerate((300, 200)):
        record = spend_at(clock.now, f"own-{i}", nanos, team_id="t1")
        b.spent(record)
        writer.submit(record)
    writer.close()  # both records committed and reported
    standing = b.standing(team)[("team", "t1")]
    assert standing.spend_nanos == 500 and standing.max_budget_nanos == 10_000  # own spend, once
    assert len(log.reads) == 1  # no read since the first
    clock.now += 0.5  # the ttl: read again, with what other replicas spent
    assert b.standing(team)[("team", "t1")].spend_nanos == 550 and len(log.reads) == 2


def written(store: Store, b: Budgets, writes: list[int], batch) -> None:
    """What the spend writer does with a batch: `writes` odd while the batch is on its way."""
    writes[0] += 1
    store.record_spend(batch)
    b.committed(batch)
    writes[0] += 1


def test_committed_spend_counts_in_its_period_as_the_store_counts_it(store: Store, tmp_path):
    """A record of an earlier period counts in the lifetime only, a later period starts afresh,
    principals without a duration count everything: the cached rows say what a new read says."""
    store.set_limits("team", "t1", {"max_budget_nanos": 10_000, "budget_duration": "1h"})
    store.set_limits("user", "u1", {"max_budget_nanos": 10_000})
    log, clock, writes = ReadLog(store), Clock(), [0]
    hour = parse_duration("1h").period_start(clock.now)
    b = budgets(log, tmp_path, clock=clock, ttl=10**6, proxy_budget=True, writes=lambda: writes[0])
    principals = [("team", "t1"), ("user", "u1"), GLOBAL]
    b.standing(principals)
    steps = [(hour, [spend_at(hour, "a", 10, team_id="t1", user_id="u1")]),
             (hour, [spend_at(hour - 1800, "late", 7, team_id="t1", user_id="u1")]),  # the hour before
             (hour + 3600, [spend_at(hour + 3600, "next", 5, team_id="t1"), spend_at(hour + 10, "b", 20, team_id="t1")])]
    for now, batch in steps:
        written(store, b, writes, batch)
        clock.now = now
        cached = {key: s.spend_nanos for key, s in b.standing(principals).items()}
        fresh = budgets(store, tmp_path, clock=clock, proxy_budget=True).standing(principals)
        assert cached == {key: s.spend_nanos for key, s in fresh.items()}, batch
    assert cached == {("team", "t1"): 5, ("user", "u1"): 17, GLOBAL: 42}
    assert len(log.reads) == 1


def test_a_read_made_while_a_batch_was_written_is_read_again(store: Store, tmp_path):
    """A read while the writer has a batch on its way may hold the batch or not, so the batch is not
    added to it: the principal is read again once the writer reports the batch."""
    store.set_limits("team", "t1", {"max_budget_nanos": 10_000})
    log, writes = ReadLog(store), [0]
    b = budgets(log, tmp_path, writes=lambda: writes[0])
    team = [("team", "t1")]
    record = make_record("r1", spend_nanos=300, team_id="t1")
    b.spent(record)
    writes[0] += 1  # the writer takes the batch
    store.record_spend([record])
    b.standing(team)  # (this one request counts the record twice: read, and not yet reported)
    b.committed([record])
    writes[0] += 1
    assert b.standing(team)[("team", "t1")].spend_nanos == 300 and len(log.reads) == 2  # read again
    assert b.standing(team)[("team", "t1")].spend_nanos == 300 and len(log.reads) == 2  # then cached
