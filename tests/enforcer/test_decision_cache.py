"""enforcer.decision_cache against a real OPA serving the example bundle."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from regate import compiler
from regate.common.errors import DecisionError
from regate.enforcer.decision_cache import DecisionCache
from regate.enforcer.decisions import OpaClient
from tests.support.opa import OpaServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "regate.yaml"
TEAM = {"team_id": "team-a", "sub": "u1", "email": "dev@example.com"}


def team_input(team: str = "team-a", user_exists: bool = True) -> dict:
    return {"request": {"method": "POST", "path": "/v1/chat/completions", "model": "gpt-4o-mini"},
            "credential": {"type": "jwt", "claims": dict(TEAM, team_id=team)},
            "facts": {"user_id": "u1", "user_exists": user_exists}}


class CountingOpa(OpaClient):
    """The real client, counting the decisions it asks OPA for."""

    asked = 0

    def decide_encoded(self, body: bytes):
        self.asked += 1
        return super().decide_encoded(body)


@pytest.fixture(scope="module")
def opa_server(opa_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "bundle.tar.gz"
    compiler.bundle.write(compiler.bundle_files(compiler.load_config(EXAMPLE)), out)
    with OpaServer(opa_bin, bundle=str(out)) as server:
        server.put_state({"blocked_teams": {}, "sync_id": "test"})
        yield server


@pytest.fixture
def opa(opa_server):
    client = CountingOpa(opa_server.url)
    yield client
    client.close()


def test_a_repeated_input_is_answered_once_by_opa(opa):
    cache = DecisionCache(opa, ttl=60, generation=lambda: 0)
    first = cache.decide(team_input())
    assert first.allow and cache.decide(team_input()) == first
    assert opa.asked == 1
    assert not cache.decide(team_input(team="team-b") | {"request": {"method": "POST", "path": "/key/generate"}}).allow
    assert opa.asked == 2


def test_a_state_change_is_seen_at_once(opa, opa_server):
    generation = [0]
    cache = DecisionCache(opa, ttl=60, generation=lambda: generation[0])
    assert cache.decide(team_input("team-c")).allow
    opa_server.put_state({"blocked_teams": {"team-c": True}, "sync_id": "test"})
    try:
        generation[0] += 1  # what BlockSync does once the block is in OPA
        decision = cache.decide(team_input("team-c"))
        assert not decision.allow and decision.reason == "team_blocked"
    finally:
        opa_server.put_state({"blocked_teams": {}, "sync_id": "test"})


def test_entries_expire_after_the_ttl(opa):
    now = [0.0]
    cache = DecisionCache(opa, ttl=0.5, generation=lambda: 0, clock=lambda: now[0])
    cache.decide(team_input())
    now[0] = 0.5
    cache.decide(team_input())
    assert opa.asked == 1
    now[0] = 0.51
    cache.decide(team_input())
    assert opa.asked == 2


def test_refusals_without_a_credential_are_never_cached(opa):
    # Anyone can send them, in any number: remembering them would let anyone fill the cache.
    cache = DecisionCache(opa, ttl=60, generation=lambda: 0)
    anonymous = {"request": {"method": "POST", "path": "/v1/chat/completions", "model": "gpt-4o-mini"},
                 "credential": {"type": "none"}}
    for _ in range(2):
        assert cache.decide(anonymous).reason == "missing_credential"
    assert opa.asked == 2 and cache.entries == 0


def test_the_cache_is_bounded_by_the_bytes_of_its_keys(opa):
    cache = DecisionCache(opa, ttl=60, generation=lambda: 0, max_bytes=20_000)
    for i in range(50):
        cache.decide(team_input(team=f"team-{i:03d}-" + "x" * 500))
    assert 0 < cache.weight <= 20_000 and cache.entries < 50


@pytest.mark.parametrize("ttl", [0, 60])
def test_upserts_and_a_disabled_cache_always_ask(opa, ttl):
    """A decision that creates a user is never reused, and ttl 0 turns the cache off."""
    cache = DecisionCache(opa, ttl=ttl, generation=lambda: 0)
    for _ in range(3):
        assert cache.decide(team_input(user_exists=False)).upsert_user
    assert opa.asked == 3
    for _ in range(2):
        cache.decide(team_input())
    assert opa.asked == (5 if ttl == 0 else 4)


def test_a_failure_to_decide_is_not_remembered(opa_bin, tmp_path):
    server = OpaServer(opa_bin, bundle=None).start(wait_bundle=False)  # no policy: the decision is undefined
    client = CountingOpa(server.url)
    try:
        cache = DecisionCache(client, ttl=60, generation=lambda: 0)
        for _ in range(2):
            with pytest.raises(DecisionError) as info:
                cache.decide(team_input())
            assert info.value.code == "decision_undefined"
        assert client.asked == 2
    finally:
        client.close()
        server.stop()


# -- allows under budgets: reused while the spend stays below the policy's headroom -----------

KEY = {"type": "virtual_key", "key": {"user_id": "u1", "team_id": "team-a", "org_id": None, "models": []}}
GROUPS = {"sub": "u1", "email": "dev@example.com", "groups": ["team-b", "team-c"]}


def budget(spend: int, max_nanos: int | None = 1000) -> dict:
    return {"spend_nanos": spend, "max_budget_nanos": max_nanos, "reset_at": None}


def key_input(key_spend: int, team_spend: int, *, key_max: int | None = 1000, team_max: int | None = 5000) -> dict:
    """A virtual key of team-a on a spending route; both have a budget."""
    return {"request": {"method": "POST", "path": "/v1/chat/completions", "model": "gpt-4o-mini"},
            "credential": KEY,
            "facts": {"user_id": "u1", "user_exists": True, "teams": {"team-a": []},
                      "budgets": {"key": budget(key_spend, key_max), "teams": {"team-a": budget(team_spend, team_max)}}}}


def without_id(decision):
    """What the enforcer acts on (the headroom is what the cache itself reads, and the one it
    reuses was reported for the spend it was decided on)."""
    return replace(decision, decision_id=None, budget_headroom_nanos=None)


def test_an_allow_under_budgets_is_reused_until_the_spend_reaches_the_headroom(opa):
    cache = DecisionCache(opa, ttl=60, generation=lambda: 0)
    first = cache.decide(key_input(0, 4200))
    assert first.allow and first.budget_headroom_nanos == 800  # the team's 5000 - 4200 beats the key's 1000 - 0
    for key_spend, team_spend in [(10, 4200), (799, 4999), (500, 4700)]:
        assert cache.decide(key_input(key_spend, team_spend)) is first
    assert opa.asked == 1
    crossing = cache.decide(key_input(0, 5000))  # the team's spend grew by the headroom: OPA is asked
    assert opa.asked == 2
    assert not crossing.allow and crossing.reason == "budget_exceeded"
    assert crossing.message.startswith("Budget has been exceeded! Team=team-a Current cost: 0.000005")


def test_a_changed_budget_is_another_input(opa):
    cache = DecisionCache(opa, ttl=60, generation=lambda: 0)
    assert cache.decide(key_input(0, 0)).allow
    assert not cache.decide(key_input(0, 0, key_max=0)).allow  # lowered to the spend: not the cached allow
    assert cache.decide(key_input(0, 0, team_max=None)).allow
    assert opa.asked == 3


def test_denials_under_budgets_are_cached_for_their_exact_input_only(opa):
    cache = DecisionCache(opa, ttl=60, generation=lambda: 0)
    for spend in (1000, 1000, 1001):
        assert cache.decide(key_input(spend, 0)).reason == "budget_exceeded"
    assert opa.asked == 2  # the message names the spend: a deny is reused for the same figures only


@pytest.mark.parametrize("seed", range(4))
def test_cached_decisions_are_opas_for_any_spend(opa, opa_server, seed):
    """A random walk of spend (and now and then budgets, the team a token selects, a spend that
    goes back, as at a period's end): every answer is what OPA answers for that very input."""
    rng = random.Random(seed)
    direct = OpaClient(opa_server.url)
    cache = DecisionCache(opa, ttl=60, generation=lambda: 0)
    spend = {"key": 0, "team-a": 0, "team-b": 0, "team-c": 0}
    key_max, steps = 1000, 300
    try:
        for _ in range(steps):
            who = rng.choice(list(spend))
            spend[who] = 0 if rng.random() < 0.03 else spend[who] + rng.choice([0, 1, 7, 60, 250])
            if rng.random() < 0.05:
                key_max = rng.choice([None, 500, 1000, 3000])
            if rng.random() < 0.5:
                doc = key_input(spend["key"], spend["team-a"], key_max=key_max, team_max=4000)
            else:
                doc = {"request": {"method": "POST", "path": "/v1/chat/completions", "model": "gpt-4o-mini",
                                   "requested_team": rng.choice([None, "team-c"])},
                       "credential": {"type": "jwt", "claims": GROUPS},
                       "facts": {"user_id": "u1", "user_exists": True, "teams": {"team-b": [], "team-c": []},
                                 "budgets": {"teams": {t: budget(spend[t], 2000) for t in ("team-b", "team-c")}}}}
            assert without_id(cache.decide(doc)) == without_id(direct.decide(doc)), doc
        assert opa.asked < steps / 2  # and the cache did spare OPA most of them
    finally:
        direct.close()
