"""The store lookups behind the policy's team facts (issue 12), on SQLite and PostgreSQL:
teams' models in one query, ids by alias (at most two), teams created if missing, and the
alias indexes the lookups use."""

from __future__ import annotations

import sqlalchemy as sa

from regate.enforcer.store import Store


def test_team_models_answers_the_known_teams_in_one_query(store: Store):
    store.create_team("t-1", models=["gpt-4o-mini"])
    store.create_team("t-2")
    assert store.team_models(["t-1", "t-2", "t-none", "t-1"]) == {"t-1": ["gpt-4o-mini"], "t-2": []}
    assert store.team_models([]) == {}


def test_ids_by_alias_are_sorted_and_at_most_two(store: Store):
    for team in ("t-c", "t-a", "t-b"):
        store.create_team(team, alias="Shared")
    store.create_team("t-solo", alias="Solo")
    assert store.team_ids_with_alias("Shared") == ["t-a", "t-b"]
    assert store.team_ids_with_alias("Solo") == ["t-solo"]
    assert store.team_ids_with_alias("solo") == []  # exact match, as LiteLLM's lookup
    store.create_organization("org-1", alias="Acme")
    store.create_organization("org-2", alias="Acme")
    assert store.organization_ids_with_alias("Acme") == ["org-1", "org-2"]
    assert store.organization_ids_with_alias("Nobody") == []


def test_create_team_if_missing_keeps_an_existing_team(store: Store):
    store.create_team("t-kept", alias="Kept", models=["gpt-4o-mini"])
    team = store.create_team("t-kept", if_missing=True)
    assert (team["team_alias"], team["models"]) == ("Kept", ["gpt-4o-mini"])
    assert store.create_team("t-new", if_missing=True)["models"] == []


def test_aliases_are_indexed(store: Store):
    inspector = sa.inspect(store.engine)
    assert {"ix_teams_team_alias"} <= {ix["name"] for ix in inspector.get_indexes("teams")}
    assert {"ix_organizations_organization_alias"} <= {ix["name"] for ix in inspector.get_indexes("organizations")}
