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
    (
        "role-mapping-without-internal-role",
        JWT_HEAD + "    roles_jwt_field: roles\n    role_mappings:\n      - role: consumer\n",
        ["c.yaml:6:9: missing required key 'internal_role' in this entry (at general_settings.litellm_jwtauth.role_mappings[0]) [missing-key]"],
    ),
    (
        "role-mapping-unknown-internal-role",
        JWT_HEAD + "    roles_jwt_field: roles\n    role_mappings:\n      - {role: consumer, internal_role: admin}\n",
        ['c.yaml:6:41: expected one of proxy_admin, team, internal_user, got "admin" (did you mean \'proxy_admin\'?) (at general_settings.litellm_jwtauth.role_mappings[0].internal_role) [invalid-choice]'],
    ),
    (
        "role-mapping-role-with-space",
        JWT_HEAD + "    roles_jwt_field: roles\n    role_mappings:\n      - {role: \"api consumer\", internal_role: team}\n",
        ['c.yaml:6:16: invalid role "api consumer": a role is one word without spaces (at general_settings.litellm_jwtauth.role_mappings[0].role) [invalid-role]'],
    ),
    (
        "object-id-without-role-mappings",
        JWT_HEAD + "    object_id_jwt_field: oid\n",
        ["c.yaml:4:26: object_id_jwt_field needs role_mappings: the mapped role says whether the object id is a team or a user (at general_settings.litellm_jwtauth.object_id_jwt_field) [object-id-jwt-field-without-role-mappings]"],
    ),
    (
        "role-mappings-without-roles-field",
        JWT_HEAD + "    role_mappings:\n      - {role: consumer, internal_role: team}\n",
        ["c.yaml:5:7: role_mappings needs roles_jwt_field: the claim holding the roles to map (at general_settings.litellm_jwtauth.role_mappings) [role-mappings-without-roles-jwt-field]"],
    ),
    (
        "roles-field-without-role-mappings",
        JWT_HEAD + "    roles_jwt_field: roles\n",
        ["c.yaml:4:22: roles_jwt_field needs role_mappings: without mappings the roles change nothing (at general_settings.litellm_jwtauth.roles_jwt_field) [roles-jwt-field-without-role-mappings]"],
    ),
    (
        "user-roles-field-without-allowed-roles",
        JWT_HEAD + "    user_roles_jwt_field: roles\n",
        ["c.yaml:4:27: user_roles_jwt_field needs user_allowed_roles: the roles a token must carry (at general_settings.litellm_jwtauth.user_roles_jwt_field) [user-roles-jwt-field-without-user-allowed-roles]"],
    ),
    (
        "allowed-roles-without-user-roles-field",
        JWT_HEAD + "    user_allowed_roles: [a]\n",
        ["c.yaml:4:25: user_allowed_roles needs user_roles_jwt_field: the claim holding the user's roles (at general_settings.litellm_jwtauth.user_allowed_roles) [user-allowed-roles-without-user-roles-jwt-field]"],
    ),
    (
        "scope-mappings-without-enforcement",
        JWT_HEAD + "    scope_mappings:\n      - {scope: s1, models: [m]}\n",
        ["c.yaml:5:7: scope_mappings needs enforce_scope_based_access: set enforce_scope_based_access: true, or the mappings would change nothing (at general_settings.litellm_jwtauth.scope_mappings) [scope-mappings-without-enforce-scope-based-access]"],
    ),
    (
        "scope-enforcement-without-mappings",
        JWT_HEAD + "    enforce_scope_based_access: true\n",
        ["c.yaml:4:33: enforce_scope_based_access needs scope_mappings: with no scope mapped, no token could use any model (at general_settings.litellm_jwtauth.enforce_scope_based_access) [enforce-scope-based-access-without-scope-mappings]"],
    ),
    (
        "scope-mapping-models-not-a-list",
        JWT_HEAD + "    scope_mappings:\n      - {scope: s1, models: m}\n    enforce_scope_based_access: true\n",
        ['c.yaml:5:29: expected a list, got a string ("m") (at general_settings.litellm_jwtauth.scope_mappings[0].models) [wrong-type]'],
    ),
    (
        "role-permissions-without-enforce-rbac",
        JWT_HEAD + "    enforce_rbac: false\n  role_permissions:\n    - {role: team, models: [m]}\n",
        ["c.yaml:6:5: role_permissions apply only with litellm_jwtauth.enforce_rbac: true (as in LiteLLM); set it or remove them (at general_settings.role_permissions) [role-permissions-without-enforce-rbac]"],
    ),
    (
        "role-permissions-twice-for-a-role",
        JWT_HEAD + "    enforce_rbac: true\n  role_permissions:\n    - {role: team, models: [m]}\n    - {role: team, routes: [/v1/models]}\n",
        ["c.yaml:7:14: role team has permissions already (role_permissions[0]) (at general_settings.role_permissions[1].role) [duplicate-role]"],
    ),
    (
        "role-permissions-unknown-role",
        JWT_HEAD + "    enforce_rbac: true\n  role_permissions:\n    - {role: admin}\n",
        ['c.yaml:6:14: expected one of proxy_admin, team, internal_user, got "admin" (did you mean \'proxy_admin\'?) (at general_settings.role_permissions[0].role) [invalid-choice]'],
    ),
    (
        "route-wildcard-not-trailing",
        JWT_HEAD + "    team_allowed_routes: [\"/v1/mod*\"]\n    public_allowed_routes: [public_route]\n",
        [
            "c.yaml:4:27: invalid route '/v1/mod*': only a trailing '/*' is a wildcard (every route below a prefix) (at general_settings.litellm_jwtauth.team_allowed_routes[0]) [invalid-route]",
            "c.yaml:5:29: unknown route group 'public_route' (did you mean 'public_routes'?); a route is a group name or a path starting with '/' (at general_settings.litellm_jwtauth.public_allowed_routes[0]) [unknown-route-group]",
        ],
    ),
    (
        "issuer-without-audience",
        JWT_HEAD + "    issuers:\n      - issuer: https://a.example\n",
        ["c.yaml:5:9: needs audience (the aud its tokens carry) or disable_audience_validation: true, so tokens minted for another application are not accepted (at general_settings.litellm_jwtauth.issuers[0]) [audience-required]"],
    ),
    (
        "issuer-with-both-audience-options",
        JWT_HEAD + "    issuers:\n      - issuer: https://a.example\n        audience: x\n        disable_audience_validation: true\n",
        ["c.yaml:5:9: set audience or disable_audience_validation: true, not both (at general_settings.litellm_jwtauth.issuers[0]) [audience-and-no-audience]"],
    ),
    (
        "issuer-audience-validation-off-is-no-choice",
        JWT_HEAD + "    issuers:\n      - {issuer: https://a.example, disable_audience_validation: false}\n",
        ["c.yaml:5:9: needs audience (the aud its tokens carry) or disable_audience_validation: true, so tokens minted for another application are not accepted (at general_settings.litellm_jwtauth.issuers[0]) [audience-required]"],
    ),
    (
        "issuer-not-a-url-without-jwks-url",
        JWT_HEAD + "    issuers:\n      - issuer: a-issuer\n        audience: x\n",
        ["c.yaml:5:9: needs jwks_url: keys can be discovered only from an http(s) issuer, not 'a-issuer' (at general_settings.litellm_jwtauth.issuers[0]) [jwks-url-required]"],
    ),
    (
        "issuer-listed-twice",
        JWT_HEAD + "    issuers:\n      - {issuer: https://a.example, audience: x}\n      - {issuer: https://a.example, disable_audience_validation: true}\n",
        ["c.yaml:6:18: issuer https://a.example is listed already (issuers[0]) (at general_settings.litellm_jwtauth.issuers[1].issuer) [duplicate-issuer]"],
    ),
    (
        "issuer-bad-jwks-url-and-unknown-field",
        JWT_HEAD + "    issuers:\n      - {issuer: https://a.example, audience: x, jwks_url: ftp://a, role_mappings: []}\n",
        [
            'c.yaml:5:60: invalid URL "ftp://a": expected http(s)://host[/path] or os.environ/NAME (at general_settings.litellm_jwtauth.issuers[0].jwks_url) [invalid-url]',
            "c.yaml:5:69: unknown key 'role_mappings' in this entry (at general_settings.litellm_jwtauth.issuers[0].role_mappings) [unknown-key]",
        ],
    ),
    (
        "issuer-bad-claim-field-and-negative-stale-ttl",
        JWT_HEAD + "    issuers:\n      - {issuer: https://a.example, audience: x, team_id_jwt_field: \"a b\"}\n    public_key_stale_ttl: -1\n",
        [
            'c.yaml:5:69: invalid claim name "a b": use a claim name or a dot path like realm.team (at general_settings.litellm_jwtauth.issuers[0].team_id_jwt_field) [invalid-claim]',
            "c.yaml:6:27: must be >= 0, got -1 (at general_settings.litellm_jwtauth.public_key_stale_ttl) [out-of-range]",
        ],
    ),
    (
        "issuers-empty",
        JWT_HEAD + "    issuers: []\n",
        ["c.yaml:4:14: must not be empty (at general_settings.litellm_jwtauth.issuers) [empty-value]"],
    ),
    (
        "issuer-with-space",
        JWT_HEAD + "    issuers:\n      - {issuer: \"https://a.example /x\", audience: x}\n",
        ['c.yaml:5:18: invalid issuer "https://a.example /x": the exact iss of the provider\'s tokens, without spaces (at general_settings.litellm_jwtauth.issuers[0].issuer) [invalid-issuer]'],
    ),

    (
        "wrong-types-of-the-new-keys",
        JWT_HEAD + "    enforce_rbac: \"yes\"\n    user_roles_jwt_field: roles\n    user_allowed_roles: admin\n    issuers: {issuer: x}\n"
        "    custom_policies: x.rego\n    public_allowed_routes: public_routes\n    public_key_stale_ttl: 1h\n"
        "    object_id_jwt_field: 7\n    enforce_scope_based_access: 1\n",
        [
            'c.yaml:4:19: expected true or false, got a string ("yes") (at general_settings.litellm_jwtauth.enforce_rbac) [wrong-type]',
            'c.yaml:6:25: expected a list, got a string ("admin") (at general_settings.litellm_jwtauth.user_allowed_roles) [wrong-type]',
            'c.yaml:7:14: expected a list, got a mapping ({"issuer": "x"}) (at general_settings.litellm_jwtauth.issuers) [wrong-type]',
            'c.yaml:8:22: expected a list, got a string ("x.rego") (at general_settings.litellm_jwtauth.custom_policies) [wrong-type]',
            'c.yaml:9:28: expected a list, got a string ("public_routes") (at general_settings.litellm_jwtauth.public_allowed_routes) [wrong-type]',
            'c.yaml:10:27: expected a number, got a string ("1h") (at general_settings.litellm_jwtauth.public_key_stale_ttl) [wrong-type]',
            "c.yaml:11:26: expected a string, got an integer (7) (at general_settings.litellm_jwtauth.object_id_jwt_field) [wrong-type]",
            "c.yaml:12:33: expected true or false, got an integer (1) (at general_settings.litellm_jwtauth.enforce_scope_based_access) [wrong-type]",
        ],
    ),
    (
        "role-permissions-wrong-types",
        JWT_HEAD + "    enforce_rbac: true\n  role_permissions:\n    - {role: team, models: gpt-4o, routes: [info_route]}\n",
        [
            'c.yaml:6:28: expected a list, got a string ("gpt-4o") (at general_settings.role_permissions[0].models) [wrong-type]',
            "c.yaml:6:45: unknown route group 'info_route' (did you mean 'info_routes'?); a route is a group name or a path starting with '/' (at general_settings.role_permissions[0].routes[0]) [unknown-route-group]",
        ],
    ),

]


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_parity_config_gives_located_errors(name, text, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert compile_errors(text, tmp_path, capsys) == expected


CUSTOM_HEAD = JWT_HEAD + "    custom_policies: [{files}]\n"
GOOD = "package regate.custom.tenant\n\ndeny contains {\"code\": \"x\", \"message\": \"m\", \"status\": 403} if input.request.path == \"/x\"\n"
# Custom files live in ../policies/ of the config; diagnostics name them as the config does.
CUSTOM_CASES = [
    (
        "custom-policy-in-another-package",
        {"tenant.rego": "# my check\npackage regate.tenant\n\ndeny contains 1 if false\n"},
        ["../policies/tenant.rego:2:1: a custom policy must be in package regate.custom.<name>, not regate.tenant [custom-policy-package]"],
    ),
    (
        "custom-policy-without-package",
        {"tenant.rego": "deny contains 1 if false\n"},
        ["../policies/tenant.rego:1:1: a custom policy needs a package line: package regate.custom.<name> [custom-policy-package]"],
    ),
    (
        "custom-test-in-a-policy-package",
        {"tenant.rego": GOOD, "tenant_test.rego": "package regate.custom.tenant\n\ntest_x if true\n"},
        ["../policies/tenant_test.rego:1:1: a test file (_test.rego) must be in package regate.custom.<name>_test, not regate.custom.tenant [custom-policy-package]"],
    ),
    (
        "custom-policy-failing-opa-check",
        {"tenant.rego": "package regate.custom.tenant\n\ndeny contains {\"code\": \"c\"} if {\n\tinput.request.team == \"x\"\n}\n"},
        ["../policies/tenant.rego:4:2: undefined ref: input.request.team [rego_type_error] [custom-policy-invalid]"],
    ),
    (
        "custom-policy-syntax-error",
        {"tenant.rego": "package regate.custom.tenant\n\ndeny contains x if {\n"},
        ["../policies/tenant.rego:4:1: unexpected eof token [rego_parse_error] [custom-policy-invalid]"],
    ),
    (
        "custom-policies-sharing-a-package",
        {"tenant.rego": GOOD, "again.rego": GOOD},
        ["c.yaml:4:48: package regate.custom.tenant is in ../policies/tenant.rego already (at general_settings.litellm_jwtauth.custom_policies[1]) [duplicate-custom-policy]"],
    ),
]


def config_dir(tmp_path, monkeypatch, files: dict[str, str]):
    """The cwd for a compile: conf/ (empty but for c.yaml), with `files` in policies/ beside it."""
    (tmp_path / "policies").mkdir()
    for file, text in files.items():
        (tmp_path / "policies" / file).write_text(text)
    (tmp_path / "conf").mkdir()
    monkeypatch.chdir(tmp_path / "conf")
    return tmp_path / "conf"


@pytest.mark.parametrize("name,files,expected", CUSTOM_CASES, ids=[c[0] for c in CUSTOM_CASES])
def test_bad_custom_policies_give_located_errors(name, files, expected, tmp_path, monkeypatch, capsys):
    here = config_dir(tmp_path, monkeypatch, files)
    text = CUSTOM_HEAD.format(files=", ".join(f"../policies/{f}" for f in files))
    assert compile_errors(text, here, capsys) == expected


def test_a_missing_custom_policy_is_located_at_its_entry(tmp_path, monkeypatch, capsys):
    here = config_dir(tmp_path, monkeypatch, {})
    assert compile_errors(CUSTOM_HEAD.format(files="nope.rego"), here, capsys) == [
        "c.yaml:4:23: cannot read custom policy nope.rego: No such file or directory "
        "(at general_settings.litellm_jwtauth.custom_policies[0]) [unreadable-custom-policy]"]


def test_a_custom_policy_path_must_be_a_rego_file(tmp_path, monkeypatch, capsys):
    here = config_dir(tmp_path, monkeypatch, {})
    assert compile_errors(CUSTOM_HEAD.format(files="tenant.py"), here, capsys) == [
        'c.yaml:4:23: invalid custom policy "tenant.py": a path to a .rego file, relative to the config '
        "(at general_settings.litellm_jwtauth.custom_policies[0]) [invalid-custom-policy]"]


def test_custom_policies_need_opa_to_compile(tmp_path, monkeypatch, capsys):
    here = config_dir(tmp_path, monkeypatch, {"tenant.rego": GOOD})
    monkeypatch.setenv("REGATE_OPA_BIN", str(tmp_path / "no-opa"))
    assert compile_errors(CUSTOM_HEAD.format(files="../policies/tenant.rego"), here, capsys) == [
        f"c.yaml:4:22: custom_policies are checked with OPA, which is missing: REGATE_OPA_BIN={tmp_path / 'no-opa'} is not "
        "an executable file; put OPA 1.22.3 on PATH or set REGATE_OPA_BIN (build it: go install "
        "github.com/open-policy-agent/opa@v1.22.3; in a checkout: scripts/ensure-opa) "
        "(at general_settings.litellm_jwtauth.custom_policies) [opa-not-found]"]
