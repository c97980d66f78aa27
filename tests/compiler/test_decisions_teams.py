"""Decision tables for many teams per token (issue 12), on a real OPA: team lists, the
x-litellm-team-id header, team model access, default and upserted teams, aliases.

Facts are what the enforcer sends: `teams` (existence and models per id it looked up),
`teams_without_model` (those whose models exclude the request's), `team_aliases` /
`org_aliases` (ids per alias). Blocked teams are runtime state (conftest.STATE blocks
"blocked-team"). Each table runs with and without `teams_without_model` (a shortcut for the
policy, which `regate explain --facts` need not give): the decisions are the same.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regate.enforcer.team_facts import teams_without_model

from .test_decisions import check, jwt

KNOWN_USER = {"user_id": "u1", "user_exists": True}


def facts(*ids, models=None, missing=(), **more):
    """The user's facts, and facts.teams as the enforcer sends it: each of `ids` in the store with
    its `models` (default: every model); `missing` ids were looked up and are not in the store."""
    del missing  # not in the store: the enforcer leaves them out
    teams = {team: list((models or {}).get(team, [])) for team in ids}
    return dict(KNOWN_USER, teams=teams, **more)


def as_sent(doc):
    """The input with facts.teams_without_model as the enforcer adds it."""
    teams, model = doc.get("facts", {}).get("teams", {}), doc["request"].get("model")
    if without := teams_without_model(teams, model):
        return dict(doc, facts=dict(doc["facts"], teams_without_model=without))
    return doc


@pytest.fixture(params=[as_sent, lambda doc: doc], ids=["as sent", "without teams_without_model"])
def sent(request):
    return request.param


def header(doc, team):
    doc["request"]["requested_team"] = team
    return doc


def key(team="team-a", models=(), user="u1"):
    return {"type": "virtual_key", "key": {"user_id": user, "team_id": team, "org_id": None, "models": list(models)}}


def request(credential, path="/v1/chat/completions", model=None, team=None, facts=None):
    doc = {"request": {"method": "POST", "path": path}, "credential": credential}
    if model:
        doc["request"]["model"] = model
    if team is not None:
        doc["request"]["requested_team"] = team
    if facts is not None:
        doc["facts"] = facts
    return doc


# examples/regate.yaml: team_id claim first, then `groups`; team models limit without enforcement.
USER = {"sub": "u1", "email": "dev@example.com"}
GROUPS = dict(USER, groups=["team-b", "team-c"])
LIMITED = {"team-b": ["gpt-4o-mini"], "team-c": ["azure-gpt-4o"]}
REGATE_TABLE = [
    # (label, input, allow, status, first reason, team the request runs as)
    ("groups: the first team", jwt(GROUPS, facts=facts("team-b", "team-c")), True, 200, None, "team-b"),
    ("groups: the header selects the second", header(jwt(GROUPS, facts=facts("team-b", "team-c")), "team-c"),
     True, 200, None, "team-c"),
    ("groups: the header selects by unique alias",
     header(jwt(GROUPS, facts=facts("team-b", "team-c", team_aliases={"Team C": ["team-c"]})), "Team C"),
     True, 200, None, "team-c"),
    ("groups: an alias two teams share selects neither",
     header(jwt(GROUPS, facts=facts("team-b", "team-c", team_aliases={"Shared": ["team-b", "team-c"]})), "Shared"),
     False, 403, "team_not_granted", None),
    ("groups: the alias of a team not granted",
     header(jwt(GROUPS, facts=facts("team-b", "team-c", team_aliases={"Team X": ["team-x"]})), "Team X"),
     False, 403, "team_not_granted", None),
    ("groups: a team not granted", header(jwt(GROUPS, facts=facts("team-b", "team-c")), "team-x"),
     False, 403, "team_not_granted", None),
    ("groups: the header is matched exactly", header(jwt(GROUPS, facts=facts("team-b", "team-c")), "Team-B"),
     False, 403, "team_not_granted", None),
    ("groups: a blocked first team is skipped", jwt(dict(USER, groups=["blocked-team", "team-c"]),
                                                    facts=facts("blocked-team", "team-c")), True, 200, None, "team-c"),
    ("groups: the header selects a blocked team", header(jwt(dict(USER, groups=["team-b", "blocked-team"]),
                                                             facts=facts("team-b", "blocked-team")), "blocked-team"),
     False, 403, "team_blocked", "blocked-team"),
    ("groups: only blocked teams", jwt(dict(USER, groups=["blocked-team"]), facts=facts("blocked-team")),
     False, 403, "team_blocked", "blocked-team"),
    ("groups: the first team that may use the model",
     jwt(GROUPS, model="azure-gpt-4o", facts=facts("team-b", "team-c", models=LIMITED)), True, 200, None, "team-c"),
    ("groups: the first team when it may use the model",
     jwt(GROUPS, model="gpt-4o-mini", facts=facts("team-b", "team-c", models=LIMITED)), True, 200, None, "team-b"),
    ("groups: the header holds the team to its models",
     header(jwt(GROUPS, model="azure-gpt-4o", facts=facts("team-b", "team-c", models=LIMITED)), "team-b"),
     False, 403, "model_not_allowed", "team-b"),
    ("groups: no team may use the model", jwt(GROUPS, model="other", facts=facts("team-b", "team-c", models=LIMITED)),
     False, 403, "model_not_allowed", "team-b"),
    ("groups: teams not in the store are not limited (no enforcement)", jwt(GROUPS, model="other", facts=KNOWN_USER),
     True, 200, None, "team-b"),
    ("groups: the team id claim comes first", jwt(dict(GROUPS, team_id="team-a"), facts=facts("team-a", "team-b")),
     True, 200, None, "team-a"),
    ("groups: repeated ids are one team", jwt(dict(USER, groups=["team-b", "team-b"]), facts=facts("team-b")),
     True, 200, None, "team-b"),
    ("groups: an empty list is no team", jwt(dict(USER, groups=[]), facts=KNOWN_USER), True, 200, None, None),
    ("groups: 100 teams", jwt(dict(USER, groups=[f"t{i}" for i in range(100)]), facts=KNOWN_USER),
     True, 200, None, "t0"),
    ("groups: 101 teams", jwt(dict(USER, groups=[f"t{i}" for i in range(101)]), facts=KNOWN_USER),
     False, 401, "invalid_claims", None),
    ("groups: a string", jwt(dict(USER, groups="team-b"), facts=KNOWN_USER), False, 401, "invalid_claims", None),
    ("groups: a number inside", jwt(dict(USER, groups=["team-b", 7]), facts=KNOWN_USER), False, 401, "invalid_claims", None),
    ("groups: an empty id", jwt(dict(USER, groups=["team-b", ""]), facts=KNOWN_USER), False, 401, "invalid_claims", None),
    ("groups: an object", jwt(dict(USER, groups={"team-b": True}), facts=KNOWN_USER), False, 401, "invalid_claims", None),
    ("groups: null inside", jwt(dict(USER, groups=["team-b", None]), facts=KNOWN_USER), False, 401, "invalid_claims", None),
    ("groups: true inside", jwt(dict(USER, groups=[True, "team-b"]), facts=KNOWN_USER), False, 401, "invalid_claims", None),
    ("groups: a list inside", jwt(dict(USER, groups=["team-b", ["team-c"]]), facts=KNOWN_USER), False, 401, "invalid_claims", None),
    ("groups: an object inside", jwt(dict(USER, groups=[{"id": "team-b"}, "team-b"]), facts=KNOWN_USER), False, 401, "invalid_claims", None),
    ("groups: only an empty id", jwt(dict(USER, groups=[""]), facts=KNOWN_USER), False, 401, "invalid_claims", None),
    ("groups: an empty id first", jwt(dict(USER, groups=["", "team-b"]), facts=KNOWN_USER), False, 401, "invalid_claims", None),
    ("groups: null is no claim", jwt(dict(USER, groups=None), facts=KNOWN_USER), True, 200, None, None),
    ("header on an internal user", header(jwt(USER, facts=KNOWN_USER), "team-a"), False, 403, "team_not_granted", None),
    ("header on an admin token", header(jwt({"scope": "litellm_proxy_admin"}, "/team/new"), "team-a"),
     False, 403, "team_not_granted", None),
    ("header on the master key", request({"type": "master_key"}, team="team-a"), False, 403, "team_not_granted", None),
    ("the master key without header", request({"type": "master_key"}), True, 200, None, None),
    ("header naming a key's own team", request(key(), team="team-a"), True, 200, None, "team-a"),
    ("header naming another team than the key's", request(key(), team="team-b"), False, 403, "team_not_granted", None),
    # Issue 11 item 5: a team's models bound its (older) virtual keys too.
    ("a key held to its team's models", request(key(), model="azure-gpt-4o", facts=facts("team-a", models={"team-a": ["gpt-4o-mini"]})),
     False, 403, "model_not_allowed", "team-a"),
    ("a key within its team's models", request(key(), model="gpt-4o-mini", facts=facts("team-a", models={"team-a": ["gpt-4o-mini"]})),
     True, 200, None, "team-a"),
    ("a key's own models and its team's both apply",
     request(key(models=["azure-gpt-4o", "gpt-4o-mini"]), model="azure-gpt-4o", facts=facts("team-a", models={"team-a": ["gpt-4o-mini"]})),
     False, 403, "model_not_allowed", "team-a"),
    ("a key's team blocked", request(key(team="blocked-team"), facts=facts("blocked-team")), False, 403, "team_blocked", "blocked-team"),
]


@pytest.mark.parametrize("label,doc,allow,status,reason,team", REGATE_TABLE, ids=[r[0] for r in REGATE_TABLE])
def test_regate_example_teams(opa_for, sent, label, doc, allow, status, reason, team):
    decision = opa_for("examples/regate").decide(sent(doc))
    check(decision, allow, status, reason)
    assert decision["subject"]["team_id"] == team, decision


_CLAIM_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(["", "team-b", "a", "\u00e9"])
    | st.text(max_size=3), lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner, max_size=2),
    max_leaves=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_CLAIM_VALUES, min_size=1, max_size=6))
def test_a_team_list_is_accepted_exactly_when_every_member_is_a_non_empty_string(opa_for, groups):
    """The policy checks the list with one sort (identity._id_list); the reference is the plain rule."""
    decision = opa_for("examples/regate").decide(jwt(dict(USER, groups=groups), facts=KNOWN_USER))
    ids_only = all(isinstance(team, str) and team != "" for team in groups)
    assert ("invalid_claims" not in decision["reasons"]) == ids_only, (groups, decision)
    if ids_only:
        assert decision["subject"]["team_id"] == groups[0], decision


def test_team_not_granted_lists_the_granted_ids_in_claim_order(opa_for):
    doc = header(jwt(dict(GROUPS, team_id="team-a", groups=["team-c", "team-a", "team-b"])), "team-x")
    decision = opa_for("examples/regate").decide(doc)
    assert decision["message"] == (
        "x-litellm-team-id team-x is not a team of this credential (granted: team-a, team-c, team-b)")
    master = opa_for("examples/regate").decide(request({"type": "master_key"}, team="team-x"))
    assert master["message"] == "x-litellm-team-id team-x is not a team of this credential (granted: none)"


def test_every_failing_team_check_is_listed(opa_for):
    """The request runs as the first team; each of its failing checks is in `reasons`."""
    doc = jwt(dict(USER, groups=["blocked-team"]), model="other", facts=facts("blocked-team", models={"blocked-team": ["x"]}))
    decision = opa_for("examples/regate").decide(doc)
    assert decision["reasons"] == ["team_blocked", "model_not_allowed"], decision
    assert decision["message"] == "team blocked-team is blocked"


def test_the_model_message_names_each_limit(opa_for):
    doc = request(key(models=["a"]), model="b", facts=facts("team-a", models={"team-a": ["c"]}))
    decision = opa_for("examples/regate").decide(doc)
    assert decision["message"] == "team team-a may not use model b; this key may not use model b"


def test_admins_run_as_no_team(opa_for):
    decision = opa_for("examples/regate").decide(jwt({"scope": "litellm_proxy_admin", "groups": ["team-b"]}, "/team/new"))
    assert decision["allow"] and decision["role"] == "proxy_admin" and decision["subject"]["team_id"] is None


# The LiteLLM docs' "Select Team via Request Header" config: enforce_team_based_model_access.
ENFORCED = dict(USER, groups=["team-b", "team-c"])
ENFORCED_TABLE = [
    ("a team in the store", jwt(ENFORCED, facts=facts("team-b", "team-c")), True, 200, None, "team-b"),
    ("the first team in the store", jwt(ENFORCED, facts=facts("team-c", missing=["team-b"])), True, 200, None, "team-c"),
    ("no team in the store", jwt(ENFORCED, facts=facts(missing=["team-b", "team-c"])), False, 403, "team_not_found", "team-b"),
    ("teams without facts are not in the store", jwt(ENFORCED, facts=KNOWN_USER), False, 403, "team_not_found", "team-b"),
    ("the header selects a team not in the store", header(jwt(ENFORCED, facts=facts("team-b", missing=["team-c"])), "team-c"),
     False, 403, "team_not_found", "team-c"),
    ("the first team whose models allow it",
     jwt(ENFORCED, model="gpt-4", facts=facts("team-b", "team-c", models={"team-b": ["other"]})), True, 200, None, "team-c"),
    ("an empty model list allows every model", jwt(ENFORCED, model="gpt-4", facts=facts("team-b", "team-c")),
     True, 200, None, "team-b"),
    ("no team may use the model", jwt(ENFORCED, model="gpt-4", facts=facts("team-b", models={"team-b": ["other"]}, missing=["team-c"])),
     False, 403, "model_not_allowed", "team-b"),
    ("a token without a team", jwt(USER, facts=KNOWN_USER), False, 403, "team_not_found", None),
    ("a token without a team, not even for info routes", jwt(USER, "/v1/models", facts=KNOWN_USER), False, 403, "team_not_found", None),
    ("admins need no team", jwt({"scope": "litellm_proxy_admin"}, "/team/new"), True, 200, None, None),
    ("a key's team need not be in the store", request(key(team="team-z"), path="/v1/models"), True, 200, None, "team-z"),
]


@pytest.mark.parametrize("label,doc,allow,status,reason,team", ENFORCED_TABLE, ids=[r[0] for r in ENFORCED_TABLE])
def test_enforced_team_model_access(opa_for, sent, label, doc, allow, status, reason, team):
    decision = opa_for("litellm-docs/team-header").decide(sent(doc))
    check(decision, allow, status, reason)
    assert decision["subject"]["team_id"] == team, decision
    assert decision["upsert_team"] is False


def test_team_not_found_names_the_team(opa_for):
    decision = opa_for("litellm-docs/team-header").decide(jwt(ENFORCED, facts=KNOWN_USER))
    assert decision["message"] == "team team-b does not exist (create it with /team/new)"


# cases/team-aliases: tenant (id) > tenant_name (alias), realm_access.groups, org alias, upserts.
SUB = {"sub": "u1"}
ALIASES_TABLE = [
    # (label, input, allow, status, first reason, team, upsert_team)
    ("alias claim resolves", jwt(dict(SUB, tenant_name="Blue"), facts=facts("t-blue", team_aliases={"Blue": ["t-blue"]})),
     True, 200, None, "t-blue", False),
    ("id claim wins over alias claim",
     jwt(dict(SUB, tenant="t-red", tenant_name="Blue"), facts=facts("t-red", "t-blue", team_aliases={"Blue": ["t-blue"]})),
     True, 200, None, "t-red", False),
    ("unknown alias grants nothing", jwt(dict(SUB, tenant_name="Nobody"), facts=KNOWN_USER),
     False, 403, "team_not_found", None, False),
    ("ambiguous alias grants nothing",
     jwt(dict(SUB, tenant_name="Blue"), facts=facts("t-1", "t-2", team_aliases={"Blue": ["t-1", "t-2"]})),
     False, 403, "team_not_found", None, False),
    ("alias claim first, then the nested team list",
     jwt(dict(SUB, tenant_name="Blue", realm_access={"groups": ["t-green"]}),
         facts=facts("t-blue", "t-green", team_aliases={"Blue": ["t-blue"]})), True, 200, None, "t-blue", False),
    ("an unknown team the token names is upserted", jwt(dict(SUB, tenant="t-new"), facts=facts(missing=["t-new"])),
     True, 200, None, "t-new", True),
    ("a known team is not upserted", jwt(dict(SUB, tenant="t-red"), facts=facts("t-red")), True, 200, None, "t-red", False),
    ("a team list's teams are never upserted",
     jwt(dict(SUB, realm_access={"groups": ["t-new", "t-red"]}), facts=facts("t-red", missing=["t-new"])),
     True, 200, None, "t-red", False),
    ("a team list's unknown teams are not found",
     jwt(dict(SUB, realm_access={"groups": ["t-new"]}), facts=facts(missing=["t-new"])),
     False, 403, "team_not_found", "t-new", False),
    ("an admin token's team claim is never upserted",
     jwt({"scope": "litellm_proxy_admin", "tenant": "t-new"}, "/team/new", facts={"teams": {}}),
     True, 200, None, None, False),
    ("no upsert when the request is denied", jwt(dict(SUB, tenant="t-new"), "/key/generate", facts=facts(missing=["t-new"])),
     False, 403, "route_not_allowed", "t-new", False),
    ("a header naming no granted team upserts nothing", header(jwt(dict(SUB, tenant="t-red"), facts=facts("t-red")), "Nope"),
     False, 403, "team_not_granted", None, False),
    ("the claimed team may not use the model: the list's next team that may",
     jwt(dict(SUB, tenant="t-red", realm_access={"groups": ["t-new", "t-green"]}), model="gpt-4o",
         facts=facts("t-red", "t-green", models={"t-red": ["other"]})), True, 200, None, "t-green", False),
    ("the claimed team is created when the list's teams may not use the model",
     jwt(dict(SUB, tenant="t-new", realm_access={"groups": ["t-red"]}), model="gpt-4o",
         facts=facts("t-red", models={"t-red": ["other"]}, missing=["t-new"])), True, 200, None, "t-new", True),
    ("tenant of the wrong type", jwt(dict(SUB, tenant_name=["Blue"]), facts=KNOWN_USER), False, 401, "invalid_claims", None, False),
]


@pytest.mark.parametrize("label,doc,allow,status,reason,team,upsert", ALIASES_TABLE, ids=[r[0] for r in ALIASES_TABLE])
def test_team_aliases_and_upserts(opa_for, sent, label, doc, allow, status, reason, team, upsert):
    decision = opa_for("cases/team-aliases").decide(sent(doc))
    check(decision, allow, status, reason)
    assert decision["subject"]["team_id"] == team, decision
    assert decision["upsert_team"] is upsert, decision


@pytest.mark.parametrize("claims, org_aliases, org", [
    ({"org_name": "Acme"}, {"Acme": ["org-1"]}, "org-1"),
    ({"org_id": "org-9", "org_name": "Acme"}, {"Acme": ["org-1"]}, "org-9"),
    ({"org_name": "Acme"}, {"Acme": ["org-1", "org-2"]}, None),
    ({"org_name": "Acme"}, {}, None),
    ({"org_name": "Acme"}, {"Other": ["org-3"]}, None),
])
def test_organization_alias_resolves_to_one_id(opa_for, claims, org_aliases, org):
    doc = jwt(dict(SUB, tenant="t-red", **claims), facts=facts("t-red", org_aliases=org_aliases))
    decision = opa_for("cases/team-aliases").decide(doc)
    assert decision["allow"], decision
    assert decision["subject"]["org_id"] == org


# cases/team-default: team_id_default for tokens without team claims.
DEFAULT_TABLE = [
    ("no team claim: the default team", jwt(SUB, facts=facts("everyone")), True, 200, None, "everyone"),
    ("a team list: not the default team", jwt(dict(SUB, groups=["team-b"]), facts=facts("team-b")), True, 200, None, "team-b"),
    ("an empty list: the default team", jwt(dict(SUB, groups=[]), facts=facts("everyone")), True, 200, None, "everyone"),
    ("the header names the default team", header(jwt(SUB, facts=facts("everyone")), "everyone"), True, 200, None, "everyone"),
    ("the default team is not granted beside a list", header(jwt(dict(SUB, groups=["team-b"]), facts=facts("team-b")), "everyone"),
     False, 403, "team_not_granted", None),
]


@pytest.mark.parametrize("label,doc,allow,status,reason,team", DEFAULT_TABLE, ids=[r[0] for r in DEFAULT_TABLE])
def test_default_team(opa_for, sent, label, doc, allow, status, reason, team):
    decision = opa_for("cases/team-default").decide(sent(doc))
    check(decision, allow, status, reason)
    assert decision["subject"]["team_id"] == team, decision


# Team selection with and without the enforcer's shortcut, over arbitrary team lists and stores.
_POOL = ["t1", "t2", "t3", "t4", "blocked-team"]
_MODELS = ["m1", "m2"]
_TEAM_LISTS = st.lists(st.sampled_from(_POOL), min_size=1, max_size=6)
_STORES = st.dictionaries(st.sampled_from(_POOL), st.lists(st.sampled_from(_MODELS), max_size=2, unique=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(groups=_TEAM_LISTS, store=_STORES, model=st.sampled_from(_MODELS), shortcut=st.sets(st.sampled_from(_POOL)))
@pytest.mark.parametrize("config, team_claims, enforced, upserts", [
    ("examples/regate", lambda teams: {"groups": teams}, False, False),
    ("litellm-docs/team-header", lambda teams: {"groups": teams}, True, False),
    ("cases/team-aliases", lambda teams: {"tenant": teams[0], "realm_access": {"groups": teams[1:]}}, True, True),
], ids=["not enforced", "enforced", "enforced with upserts"])
def test_the_shortcut_changes_no_decision_and_a_wrong_one_widens_nothing(opa_for, config, team_claims, enforced, upserts,
                                                                         groups, store, model, shortcut):
    doc = jwt(dict(USER, **team_claims(groups)), model=model, facts=dict(KNOWN_USER, teams=store))
    opa = opa_for(config)
    plain = opa.decide(doc)
    assert opa.decide(as_sent(doc)) == plain

    def usable(team):  # the rule the README states, for reference
        known = team in store or (upserts and team == groups[0])
        return team != "blocked-team" and (known or not enforced) and (not store.get(team) or model in store[team])

    assert plain["subject"]["team_id"] == next(filter(usable, groups), groups[0]), (plain, groups, store)
    # Whatever the shortcut says, the team a request runs as is checked in full.
    wrong = opa.decide(dict(doc, facts=dict(doc["facts"], teams_without_model={t: True for t in shortcut})))
    if wrong["allow"]:
        team = wrong["subject"]["team_id"]
        assert plain["allow"] and team in groups and team != "blocked-team", (wrong, plain)
        assert not store.get(team) or model in store[team], (wrong, store)
