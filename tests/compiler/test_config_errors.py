"""Malformed configs: each gives exactly these located messages, through the real CLI
(exit 2, nothing written). The expected text is the contract users see in CI logs."""

from __future__ import annotations

import textwrap

import pytest

from regate.cli import main

JWT_HEAD = "general_settings:\n  enable_jwt_auth: true\n  litellm_jwtauth:\n"

CASES = [
    (
        "yaml-syntax",
        "general_settings: [1\n",
        ["c.yaml:2:1: invalid YAML: while parsing a flow sequence: expected ',' or ']', but got '<stream end>' [yaml-syntax]"],
    ),
    (
        "yaml-tab-indent",
        "general_settings:\n\tmaster_key: sk-1\n",
        ["c.yaml:2:1: invalid YAML: while scanning for the next token: found character '\\t' that cannot start any token [yaml-syntax]"],
    ),
    ("empty", "", ["c.yaml:1:1: config is empty [empty-config]"]),
    ("only-comment", "# nothing here\n", ["c.yaml:1:1: config is empty [empty-config]"]),
    ("top-level-list", "- a\n- b\n", ["c.yaml:1:1: expected a mapping at the top level, got a list [wrong-type]"]),
    (
        "duplicate-key",
        "general_settings:\n  master_key: sk-1\n  master_key: sk-2\n",
        ["c.yaml:3:3: duplicate key 'master_key' (at general_settings.master_key) [duplicate-key]"],
    ),
    (
        "top-level-typo",
        "generl_settings:\n  master_key: sk-1\n",
        ["c.yaml:1:1: unknown key 'generl_settings' at the top level (did you mean 'general_settings'?) (at generl_settings) [unknown-key]"],
    ),
    (
        "general-settings-not-mapping",
        "general_settings: yes\n",
        ["c.yaml:1:19: expected a mapping, got a boolean (true) (at general_settings) [wrong-type]"],
    ),
    (
        "unknown-general-key",
        "general_settings:\n  enable_jwt_authh: true\n",
        ["c.yaml:2:3: unknown key 'enable_jwt_authh' in 'general_settings' (did you mean 'enable_jwt_auth'?) (at general_settings.enable_jwt_authh) [unknown-key]"],
    ),
    (
        "enable-jwt-auth-string",
        "general_settings:\n  enable_jwt_auth: \"true\"\n",
        ['c.yaml:2:20: expected true or false, got a string ("true") (at general_settings.enable_jwt_auth) [wrong-type]'],
    ),
    (
        "master-key-number",
        "general_settings:\n  master_key: 1234\n",
        ["c.yaml:2:15: expected a string, got an integer (1234) (at general_settings.master_key) [wrong-type]"],
    ),
    (
        "master-key-prefix",
        "general_settings:\n  master_key: my-secret\n",
        ["c.yaml:2:15: master_key must start with 'sk-' (as LiteLLM requires) or be os.environ/NAME (at general_settings.master_key) [invalid-master-key]"],
    ),
    (
        "unknown-jwt-key",
        JWT_HEAD + "    admin_jwt_scop: admin\n",
        ["c.yaml:4:5: unknown key 'admin_jwt_scop' in 'litellm_jwtauth' (did you mean 'admin_jwt_scope'?) (at general_settings.litellm_jwtauth.admin_jwt_scop) [unknown-key]"],
    ),
    (
        "unknown-jwt-key-no-hint",
        JWT_HEAD + "    frobnicate: 1\n",
        ["c.yaml:4:5: unknown key 'frobnicate' in 'litellm_jwtauth' (at general_settings.litellm_jwtauth.frobnicate) [unknown-key]"],
    ),
    (
        "litellm-jwtauth-list",
        JWT_HEAD + "    - admin_jwt_scope\n",
        ['c.yaml:4:5: expected a mapping, got a list (["admin_jwt_scope"]) (at general_settings.litellm_jwtauth) [wrong-type]'],
    ),
    (
        "admin-scope-with-space",
        JWT_HEAD + "    admin_jwt_scope: proxy admin\n",
        ['c.yaml:4:22: invalid scope "proxy admin": a scope is one word without spaces (at general_settings.litellm_jwtauth.admin_jwt_scope) [invalid-scope]'],
    ),
    (
        "unknown-route-group",
        JWT_HEAD + "    team_allowed_routes: [openai_routes, info_route]\n",
        ["c.yaml:4:42: unknown route group 'info_route' (did you mean 'info_routes'?); a route is a group name or a path starting with '/' (at general_settings.litellm_jwtauth.team_allowed_routes[1]) [unknown-route-group]"],
    ),
    (
        "route-with-inner-wildcard",
        JWT_HEAD + "    team_allowed_routes:\n      - /v1/*/models\n",
        ["c.yaml:5:9: invalid route '/v1/*/models': only a trailing '/*' is a wildcard (every route below a prefix) (at general_settings.litellm_jwtauth.team_allowed_routes[0]) [invalid-route]"],
    ),
    (
        "route-with-double-slash",
        JWT_HEAD + "    admin_allowed_routes: [/key//generate]\n",
        ["c.yaml:4:28: invalid route '/key//generate': empty path segment (no '//' and no trailing '/') (at general_settings.litellm_jwtauth.admin_allowed_routes[0]) [invalid-route]"],
    ),
    (
        "route-with-dot-dot",
        JWT_HEAD + "    admin_allowed_routes: [/key/../user/new]\n",
        ["c.yaml:4:28: invalid route '/key/../user/new': '..' segments are not allowed (at general_settings.litellm_jwtauth.admin_allowed_routes[0]) [invalid-route]"],
    ),
    (
        "route-bad-template",
        JWT_HEAD + "    team_allowed_routes: [\"/v1/models/{model-id}\"]\n",
        ["c.yaml:4:27: invalid route '/v1/models/{model-id}': a template segment must be exactly {name}, got '{model-id}' (at general_settings.litellm_jwtauth.team_allowed_routes[0]) [invalid-route]"],
    ),
    (
        "routes-not-a-list",
        JWT_HEAD + "    team_allowed_routes: openai_routes\n",
        ['c.yaml:4:26: expected a list, got a string ("openai_routes") (at general_settings.litellm_jwtauth.team_allowed_routes) [wrong-type]'],
    ),
    (
        "bad-email-domain",
        JWT_HEAD + "    user_email_jwt_field: email\n    user_allowed_email_domain: \"@my-co.com\"\n",
        ['c.yaml:5:32: invalid email domain "@my-co.com": expected a domain like example.com (at general_settings.litellm_jwtauth.user_allowed_email_domain) [invalid-domain]'],
    ),
    (
        "bad-email-domain-in-list",
        JWT_HEAD + "    user_email_jwt_field: email\n    user_allowed_email_domain: [ok.com, \"not a domain\", 7]\n",
        [
            'c.yaml:5:41: invalid email domain "not a domain": expected a domain like example.com (at general_settings.litellm_jwtauth.user_allowed_email_domain[1]) [invalid-domain]',
            "c.yaml:5:57: expected a string, got an integer (7) (at general_settings.litellm_jwtauth.user_allowed_email_domain[2]) [wrong-type]",
        ],
    ),
    (
        "email-domain-object",
        JWT_HEAD + "    user_email_jwt_field: email\n    user_allowed_email_domain: {a: b}\n",
        ['c.yaml:5:32: expected a domain or a list of domains, got a mapping ({"a": "b"}) (at general_settings.litellm_jwtauth.user_allowed_email_domain) [wrong-type]'],
    ),
    (
        "email-domain-without-field",
        JWT_HEAD + "    user_allowed_email_domain: my-co.com\n",
        ["c.yaml:4:32: user_allowed_email_domain needs user_email_jwt_field (the claim holding the email) (at general_settings.litellm_jwtauth.user_allowed_email_domain) [email-field-required]"],
    ),
    (
        "claim-field-with-space",
        JWT_HEAD + "    team_id_jwt_field: \"team id\"\n",
        ['c.yaml:4:24: invalid claim name "team id": use a claim name or a dot path like realm.team (at general_settings.litellm_jwtauth.team_id_jwt_field) [invalid-claim]'],
    ),
    (
        "claim-field-empty-segment",
        JWT_HEAD + "    user_id_jwt_field: realm..sub\n",
        ['c.yaml:4:24: invalid claim name "realm..sub": use a claim name or a dot path like realm.team (at general_settings.litellm_jwtauth.user_id_jwt_field) [invalid-claim]'],
    ),
    (
        "public-key-ttl-negative",
        JWT_HEAD + "    public_key_ttl: -5\n",
        ["c.yaml:4:21: must be > 0, got -5 (at general_settings.litellm_jwtauth.public_key_ttl) [out-of-range]"],
    ),
    (
        "public-key-ttl-string",
        JWT_HEAD + "    public_key_ttl: 10m\n",
        ['c.yaml:4:21: expected a number, got a string ("10m") (at general_settings.litellm_jwtauth.public_key_ttl) [wrong-type]'],
    ),
    (
        "upsert-not-bool",
        JWT_HEAD + "    user_id_upsert: 1\n",
        ["c.yaml:4:21: expected true or false, got an integer (1) (at general_settings.litellm_jwtauth.user_id_upsert) [wrong-type]"],
    ),
    (
        "unsupported-role-sync",
        JWT_HEAD + "    sync_user_role_and_teams: true\n    jwt_litellm_role_map:\n      - {jwt_role: ADMIN, litellm_role: proxy_admin}\n",
        [
            "c.yaml:4:5: 'sync_user_role_and_teams' is not supported by regate: regate writes no token claims back into the store: each token's roles and teams are read from its claims (role_mappings, team_ids_jwt_field); remove it (at general_settings.litellm_jwtauth.sync_user_role_and_teams) [unsupported-key]",
            "c.yaml:5:5: 'jwt_litellm_role_map' is not supported by regate: it rewrites stored user roles from token claims (sync_user_role_and_teams); map the token's roles with roles_jwt_field and role_mappings instead; remove it (at general_settings.litellm_jwtauth.jwt_litellm_role_map) [unsupported-key]",
        ],
    ),
    (
        "unsupported-custom-validate",
        JWT_HEAD + "    custom_validate: custom_validate.my_custom_validate\n",
        ["c.yaml:4:5: 'custom_validate' is not supported by regate: a Python function would decide outside the compiled, auditable policy; write the check in Rego and list it in litellm_jwtauth.custom_policies; remove it (at general_settings.litellm_jwtauth.custom_validate) [unsupported-key]"],
    ),
    (
        "unsupported-custom-auth",
        "general_settings:\n  custom_auth: custom_auth.user_api_key_auth\n",
        ["c.yaml:2:3: 'custom_auth' is not supported by regate: a custom auth function would bypass the compiled policy; remove it (at general_settings.custom_auth) [unsupported-key]"],
    ),
    (
        "unsupported-include",
        "include:\n  - models.yaml\n",
        ["c.yaml:1:1: 'include' is not supported by regate: inline the included files into one config; remove it (at include) [unsupported-key]"],
    ),
    (
        "model-list-not-list",
        "model_list:\n  model_name: gpt\n",
        ['c.yaml:2:3: expected a list, got a mapping ({"model_name": "gpt"}) (at model_list) [wrong-type]'],
    ),
    (
        "model-missing-params",
        "model_list:\n  - model_name: gpt-4o\n",
        ["c.yaml:2:5: missing required key 'litellm_params' in this entry (at model_list[0]) [missing-key]"],
    ),
    (
        "model-missing-model",
        "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      api_key: os.environ/K\n",
        ["c.yaml:4:7: missing required key 'model' in 'litellm_params' (at model_list[0].litellm_params) [missing-key]"],
    ),
    (
        "model-param-typo",
        "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: gpt-4o\n      api_bse: http://x\n",
        ["c.yaml:5:7: unknown key 'api_bse' in 'litellm_params' (did you mean 'api_base'?) (at model_list[0].litellm_params.api_bse) [unknown-key]"],
    ),
    (
        "model-bad-api-base",
        "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: gpt-4o\n      api_base: localhost:8000\n",
        ['c.yaml:5:17: invalid URL "localhost:8000": expected http(s)://host[/path] or os.environ/NAME (at model_list[0].litellm_params.api_base) [invalid-url]'],
    ),
    (
        "model-negative-price",
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: gpt-4o}\n    model_info:\n      input_cost_per_token: -0.1\n",
        ["c.yaml:5:29: must be >= 0, got -0.1 (at model_list[0].model_info.input_cost_per_token) [out-of-range]"],
    ),
    (
        "azure-without-api-base",
        "model_list:\n  - model_name: az\n    litellm_params:\n      model: azure/prod\n      api_version: '2024-10-21'\n",
        ["c.yaml:4:7: an azure/ model needs api_base (https://<resource>.openai.azure.com) (at model_list[0].litellm_params) [azure-needs-api-base]"],
    ),
    (
        "several-problems-all-reported",
        JWT_HEAD + "    admin_jwt_scop: a\n    public_key_ttl: 0\n  master_key: 5\n",
        [
            "c.yaml:4:5: unknown key 'admin_jwt_scop' in 'litellm_jwtauth' (did you mean 'admin_jwt_scope'?) (at general_settings.litellm_jwtauth.admin_jwt_scop) [unknown-key]",
            "c.yaml:5:21: must be > 0, got 0 (at general_settings.litellm_jwtauth.public_key_ttl) [out-of-range]",
            "c.yaml:6:15: expected a string, got an integer (5) (at general_settings.master_key) [wrong-type]",
        ],
    ),
    (
        "negative-proxy-budget",
        "litellm_settings:\n  max_budget: -1\n",
        ["c.yaml:2:15: must be >= 0, got -1 (at litellm_settings.max_budget) [out-of-range]"],
    ),
    (
        "unknown-duration-unit",
        "litellm_settings:\n  max_budget: 10\n  budget_duration: 30y\n",
        ['c.yaml:3:20: invalid duration "30y": a whole number followed by s, m, h, d, w or mo (30s, 30m, 30h, 30d, 1mo) '
         "(at litellm_settings.budget_duration) [invalid-duration]"],
    ),
    (
        "upperbound-unknown-field",
        "litellm_settings:\n  upperbound_key_generate_params:\n    rpm_limt: 5\n",
        ["c.yaml:3:5: unknown key 'rpm_limt' in 'upperbound_key_generate_params' (did you mean 'rpm_limit'?) "
         "(at litellm_settings.upperbound_key_generate_params.rpm_limt) [unknown-key]"],
    ),
    (
        "default-key-limit-not-integer",
        "litellm_settings:\n  default_key_generate_params:\n    tpm_limit: 1.5\n",
        ["c.yaml:3:16: expected an integer, got a number (1.5) (at litellm_settings.default_key_generate_params.tpm_limit) [wrong-type]"],
    ),
    (
        "default-above-upperbound",
        "litellm_settings:\n  default_key_generate_params:\n    rpm_limit: 100\n  upperbound_key_generate_params:\n    rpm_limit: 10\n",
        ["c.yaml:3:16: default rpm_limit 100 is above upperbound_key_generate_params.rpm_limit (10) "
         "(at litellm_settings.default_key_generate_params.rpm_limit) [default-above-upperbound]"],
    ),
    (
        "redis-port-out-of-range",
        "router_settings:\n  redis_port: 70000\n",
        ["c.yaml:2:15: must be <= 65535, got 70000 (at router_settings.redis_port) [out-of-range]"],
    ),
]


def compile_errors(text: str, tmp_path, capsys) -> list[str]:
    """`regate compile c.yaml` on `text` in tmp_path (the cwd): the lines on stderr, after
    asserting it failed with exit 2 and wrote nothing."""
    (tmp_path / "c.yaml").write_text(text)
    code = main(["compile", "c.yaml", "-o", "out.tar.gz"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # nothing written, not even half
    return err.splitlines()


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_gives_located_errors(name, text, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert compile_errors(text, tmp_path, capsys) == expected


def test_missing_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compile", "nope.yaml"]) == 2
    assert capsys.readouterr().err == "nope.yaml:1:1: cannot read config: No such file or directory [unreadable]\n"


def test_not_utf8(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_bytes(b"general_settings:\n  master_key: sk-\xff\n")
    assert main(["compile", "c.yaml"]) == 2
    assert capsys.readouterr().err == "c.yaml:2:18: config is not UTF-8 [not-utf8]\n"


def test_refuses_to_replace_a_directory_that_is_not_a_bundle(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("general_settings:\n  enable_jwt_auth: true\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "precious.py").write_text("x = 1\n")
    assert main(["compile", "c.yaml", "-o", "src"]) == 2
    assert "src: exists and is not a regate bundle; refusing to replace it [output_error]" in capsys.readouterr().err
    assert (tmp_path / "src" / "precious.py").read_text() == "x = 1\n"


def test_warnings_do_not_fail(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(textwrap.dedent("""\
        general_settings:
          master_key: sk-literal
          litellm_jwtauth: {}
        model_list:
          - model_name: claude
            litellm_params: {model: anthropic/claude-3-5-sonnet}
        """))
    assert main(["compile", "c.yaml", "-o", "b.tar.gz"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "c.yaml:2:15: warning: master_key is a literal secret: prefer os.environ/NAME (at general_settings.master_key) [literal-secret]",
        "c.yaml:3:20: warning: litellm_jwtauth is set but enable_jwt_auth is not true: every JWT will be refused (at general_settings.litellm_jwtauth) [jwt-disabled]",
        "c.yaml:6:29: warning: provider 'anthropic' is not proxied by regate; requests for 'claude' will get 501 (at model_list[0].litellm_params.model) [provider-not-proxied]",
        "wrote b.tar.gz",
    ]
    assert (tmp_path / "b.tar.gz").is_file()
