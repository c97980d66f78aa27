"""The store facts the enforcer sends with a decision are looked up the way the policy reads the
claims: with the claim fields of the token's issuer, the object id of a mapped user role, and
every team the credential could run as (SQLite store, compiled configs)."""

from __future__ import annotations

import textwrap

import pytest

from regate import compiler
from regate.enforcer.credentials import Credential, Facts
from regate.enforcer.store import Store
from regate.enforcer.team_facts import TeamFacts

CONFIG = """\
general_settings:
  enable_jwt_auth: true
  litellm_jwtauth:
    user_id_jwt_field: sub
    team_id_jwt_field: team_id
    team_ids_jwt_field: groups
    roles_jwt_field: roles
    role_mappings: [{role: user, internal_role: internal_user}, {role: app, internal_role: team}]
    object_id_jwt_field: oid
    issuers:
      - {issuer: "https://b.example", audience: x, user_id_jwt_field: upn, team_ids_jwt_field: teams}
"""


@pytest.fixture
def facts(tmp_path):
    (tmp_path / "c.yaml").write_text(textwrap.dedent(CONFIG))
    policy = compiler.load_config(tmp_path / "c.yaml").policy
    store = Store.from_url(None, default_sqlite_path=str(tmp_path / "s.db"))
    store.migrate()
    store.create_user("u-sub")
    store.create_team("t-1", models=["m"])
    store.create_team("t-2", alias="Two")
    yield Facts(store, policy, teams=TeamFacts(store, policy))
    store.close()


def jwt(issuer=None, **claims) -> Credential:
    return Credential("jwt", claims=claims, issuer=issuer)


def test_the_user_is_read_with_the_issuers_own_field(facts):
    assert facts.user_id(jwt(sub="u-sub", upn="u-upn")) == "u-sub"
    assert facts.user_id(jwt("https://b.example", sub="u-sub", upn="u-upn")) == "u-upn"
    assert facts.for_credential(jwt(sub="u-sub")) == {"user_id": "u-sub", "user_exists": True}


def test_a_mapped_user_role_names_the_user_by_the_object_id(facts):
    assert facts.user_id(jwt(sub="u-sub", roles=["user"], oid="u-oid")) == "u-oid"
    assert facts.user_id(jwt(sub="u-sub", roles="user app", oid="t-1")) == "u-sub"  # team wins: oid is a team


def test_every_team_the_credential_could_run_as_is_looked_up(facts):
    got = facts.for_credential(jwt(sub="u-sub", team_id="t-1", groups=["t-9", 5], roles=["app"], oid="t-2"),
                               requested_team="Two")
    assert got["teams"] == {"t-1": ["m"], "t-2": []}  # t-9 is not in the store; 5 is no id
    assert got["team_aliases"] == {"Two": ["t-2"]}
    issued = facts.for_credential(jwt("https://b.example", upn="u-x", groups=["t-1"], teams=["t-2"]))
    assert issued["teams"] == {"t-2": []}  # the issuer's own team list field


def test_a_team_list_over_the_bound_is_not_looked_up(facts):
    got = facts.for_credential(jwt(sub="u-sub", groups=[f"t-{i}" for i in range(101)]))
    assert "teams" not in got


def test_a_request_without_a_credential_looks_nothing_up(facts, monkeypatch):
    # The policy judges it on nothing else (missing_credential, or a public route): a header sent
    # without a credential must cost no store query and no cache entry.
    monkeypatch.setattr(Store, "team_models", lambda *a: pytest.fail("store queried"))
    monkeypatch.setattr(Store, "team_ids_with_alias", lambda *a, **kw: pytest.fail("store queried"))
    assert facts.for_credential(Credential("none"), requested_team="t-1") is None


def test_a_team_list_is_one_cached_lookup_until_a_team_changes(facts, monkeypatch):
    token = jwt(sub="u-sub", groups=["t-2", "t-9", "t-1"])
    assert list(facts.for_credential(token)["teams"]) == ["t-2", "t-1"]  # claim order; t-9 is not in the store
    real = Store.team_models
    monkeypatch.setattr(Store, "team_models", lambda *a: pytest.fail("store queried"))
    assert facts.for_credential(token)["teams"] == {"t-2": [], "t-1": ["m"]}
    facts.team_changed("t-9")  # created or updated here: every cached list may hold it
    looked_up = []
    monkeypatch.setattr(Store, "team_models", lambda store, ids: looked_up.append(ids) or real(store, ids))
    assert facts.for_credential(token)["teams"] == {"t-2": [], "t-1": ["m"]}
    assert looked_up == [("t-2", "t-9", "t-1")]


@pytest.mark.parametrize("model, without", [
    ("m", None),  # t-1 has it, t-2 has every model
    ("other", {"t-1": True}),
    (None, None),  # no model named (e.g. GET /v1/models): nothing to exclude
])
def test_the_teams_whose_models_exclude_the_requested_one_are_listed(facts, model, without):
    got = facts.for_credential(jwt(sub="u-sub", groups=["t-2", "t-9", "t-1"]), model=model)
    assert got["teams"] == {"t-2": [], "t-1": ["m"]}
    assert got.get("teams_without_model") == without
