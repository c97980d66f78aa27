"""Malformed values of the LiteLLM JWT keys of issues 12 and 13 (teams, roles, scopes, issuers,
custom policies): each gives exactly these located messages (exit 2, nothing written)."""

from __future__ import annotations

import pytest

from .test_config_errors import JWT_HEAD, compile_errors

CASES = [
    (
        "team-ids-field-number",
        JWT_HEAD + "    team_ids_jwt_field: 5\n",
        ["c.yaml:4:25: expected a string, got an integer (5) (at general_settings.litellm_jwtauth.team_ids_jwt_field) [wrong-type]"],
    ),
    (
        "team-ids-field-with-space",
        JWT_HEAD + "    team_ids_jwt_field: \"my groups\"\n",
        ['c.yaml:4:25: invalid claim name "my groups": use a claim name or a dot path like realm.team (at general_settings.litellm_jwtauth.team_ids_jwt_field) [invalid-claim]'],
    ),
    (
        "team-alias-field-list",
        JWT_HEAD + "    team_alias_jwt_field: [team_name]\n",
        ['c.yaml:4:27: expected a string, got a list (["team_name"]) (at general_settings.litellm_jwtauth.team_alias_jwt_field) [wrong-type]'],
    ),
    (
        "org-alias-field-empty-segment",
        JWT_HEAD + "    org_alias_jwt_field: org..name\n",
        ['c.yaml:4:26: invalid claim name "org..name": use a claim name or a dot path like realm.team (at general_settings.litellm_jwtauth.org_alias_jwt_field) [invalid-claim]'],
    ),
    (
        "team-id-default-empty",
        JWT_HEAD + "    team_id_default: \"\"\n",
        ['c.yaml:4:22: invalid team id "": 1 to 256 characters, no control characters (at general_settings.litellm_jwtauth.team_id_default) [invalid-team-id]'],
    ),
    (
        "team-id-default-control-character",
        JWT_HEAD + "    team_id_default: \"team\\u0007\"\n",
        ['c.yaml:4:22: invalid team id "team\\u0007": 1 to 256 characters, no control characters (at general_settings.litellm_jwtauth.team_id_default) [invalid-team-id]'],
    ),
    (
        "team-id-default-number",
        JWT_HEAD + "    team_id_default: 42\n",
        ["c.yaml:4:22: expected a string, got an integer (42) (at general_settings.litellm_jwtauth.team_id_default) [wrong-type]"],
    ),
    (
        "team-id-upsert-string",
        JWT_HEAD + "    team_id_upsert: \"yes\"\n",
        ['c.yaml:4:21: expected true or false, got a string ("yes") (at general_settings.litellm_jwtauth.team_id_upsert) [wrong-type]'],
    ),
    (
        "enforce-team-models-number",
        JWT_HEAD + "    enforce_team_based_model_access: 1\n",
        ["c.yaml:4:38: expected true or false, got an integer (1) (at general_settings.litellm_jwtauth.enforce_team_based_model_access) [wrong-type]"],
    ),
]


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_parity_config_gives_located_errors(name, text, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert compile_errors(text, tmp_path, capsys) == expected
