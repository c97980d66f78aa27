"""`regate explain`: OPA's decision for one request, each check with the Rego rule and the config
line behind it. Rule lines are checked against the generated Rego, config lines against the YAML."""

from __future__ import annotations

import base64
import io
import json

import pytest

from regate import compiler

from ..compiler.conftest import ROOT

EXAMPLE = ROOT / "examples" / "regate.yaml"
TEAM_CLAIMS = json.dumps({"team_id": "team-a", "sub": "u1", "email": "dev@example.com", "name": "Dev One"})
KNOWN = json.dumps({"user_id": "u1", "user_exists": True})


def config_line(path, key: str) -> int:
    """The 1-based line of `key:` in a config file."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith(f"{key}:"))


def rule_line(config_path, rule_head: str) -> int:
    """The line of a rule head in the generated authz.rego."""
    files = compiler.bundle_files(compiler.load_config(config_path))
    text = files["regate/authz.rego"].decode()
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(rule_head))


def test_a_denial_names_its_rule_and_config_line(regate):
    run = regate("explain", EXAMPLE, "--claims", TEAM_CLAIMS, "--facts", KNOWN, "--path", "/key/generate")
    assert (run.code, run.err) == (0, "")
    rule = rule_line(EXAMPLE, '_access_denials["route_not_allowed"]')
    assert run.out == (
        f"config      {EXAMPLE}\n"
        "request     POST /key/generate\n"
        'credential  JWT claims {"email": "dev@example.com", "name": "Dev One", "sub": "u1", "team_id": "team-a"}\n'
        "decision    deny 403 route_not_allowed: role team may not call /key/generate\n"
        "role        team\n"
        "subject     email=dev@example.com team_id=team-a user_id=u1\n"
        'facts       {"user_exists": true, "user_id": "u1"}\n'
        "\n"
        "denied by:\n"
        "  route_not_allowed: Route not allowed\n"
        "    role team may not call /key/generate\n"
        f"    rule    data.regate.authz._access_denials.route_not_allowed (regate/authz.rego:{rule})\n"
        # only the caller's role's routes: team_allowed_routes, not the admin's or the user's
        f"    config  general_settings.litellm_jwtauth.team_allowed_routes ({EXAMPLE}:"
        f"{config_line(EXAMPLE, 'team_allowed_routes')})\n"
        "\n"
        "15 other checks passed, did not apply or were not reached (--json lists every check).\n")


def test_an_allow_lists_every_check_that_passed(regate):
    run = regate("explain", EXAMPLE, "--claims", TEAM_CLAIMS, "--facts", KNOWN, "--model", "gpt-4o-mini", "--json")
    assert run.code == 0
    doc = run.json()
    assert doc["decision"]["allow"] is True and doc["decided_by"] == "opa"
    assert doc["input"]["request"] == {"method": "POST", "path": "/v1/chat/completions", "model": "gpt-4o-mini"}
    checks = doc["checks"]
    assert checks[0]["reason"] == "public_route" and checks[0]["outcome"] == "not_applicable"
    assert checks[0]["rules"] == [{"ref": "data.regate.authz.denials", "file": "regate/authz.rego",
                                   "line": rule_line(EXAMPLE, "denials := {} if {")}]
    assert checks[0]["config"] == [{"key": "general_settings.litellm_jwtauth.public_allowed_routes", "line": None,
                                    "file": str(EXAMPLE)}]
    checks = checks[1:]
    assert [c["reason"] for c in checks] == ["missing_credential", "jwt_auth_disabled", "invalid_claims",
                                             "path_not_canonical", "no_role", "role_not_allowed", "team_not_granted",
                                             "email_domain_not_allowed", "team_not_found", "team_blocked",
                                             "state_unavailable", "route_not_allowed", "model_not_allowed",
                                             "user_not_found", "budget_exceeded"]
    assert {c["outcome"] for c in checks} == {"pass"}
    # every rule named is where it says, in the generated Rego
    authz = compiler.bundle_files(compiler.load_config(EXAMPLE))["regate/authz.rego"].decode().splitlines()
    for check in checks:
        assert check["rules"], check
        for rule in check["rules"]:
            stage = "_credential_denials" if check["stage"] == "credential" else "_access_denials"
            assert rule["ref"] == f"data.regate.authz.{stage}.{check['reason']}"
            assert rule["file"] == "regate/authz.rego"
            assert authz[rule["line"] - 1].startswith(f'{stage}["{check["reason"]}"]'), rule
    by_reason = {c["reason"]: c for c in checks}
    assert by_reason["email_domain_not_allowed"]["config"] == [
        {"key": "general_settings.litellm_jwtauth.user_allowed_email_domain",
         "line": config_line(EXAMPLE, "user_allowed_email_domain"), "file": str(EXAMPLE)},
        {"key": "general_settings.litellm_jwtauth.user_email_jwt_field",
         "line": config_line(EXAMPLE, "user_email_jwt_field"), "file": str(EXAMPLE)}]
    text = regate("explain", EXAMPLE, "--claims", TEAM_CLAIMS, "--facts", KNOWN).out
    assert "decision    allow: allowed\n" in text and "\npassed:\n" in text
    assert f"    config  general_settings.litellm_jwtauth.user_id_upsert ({EXAMPLE}:{config_line(EXAMPLE, 'user_id_upsert')})\n" \
        in text


def test_defaults_are_cited_as_defaults(regate):
    config = ROOT / "examples" / "litellm-docs" / "team-routes.yaml"
    run = regate("explain", config, "--claims", '{"scope": "litellm_proxy_admin"}', "--path", "/v1/chat/completions")
    assert run.code == 0
    assert "decision    deny 403 route_not_allowed: role proxy_admin may not call /v1/chat/completions\n" in run.out
    assert "    config  general_settings.litellm_jwtauth.admin_allowed_routes (default)\n" in run.out


def test_after_a_credential_denial_the_other_checks_are_not_reached(regate):
    doc = regate("explain", EXAMPLE, "--no-credential", "--json").json()
    assert doc["decision"]["reasons"] == ["missing_credential"]
    outcomes = {c["reason"]: c["outcome"] for c in doc["checks"]}
    assert outcomes.pop("public_route") == "not_applicable"
    assert outcomes.pop("missing_credential") == "deny"
    assert {outcomes.pop("jwt_auth_disabled"), outcomes.pop("invalid_claims")} == {"pass"}
    assert set(outcomes.values()) == {"not_reached"}
    assert doc["checks"][1]["message"] == "missing credential: send Authorization: Bearer <token>"


def test_every_failing_check_is_listed(regate):
    claims = json.dumps({"team_id": "team-a", "sub": "u1", "email": "dev@other.example.net"})
    run = regate("explain", EXAMPLE, "--claims", claims, "--facts", KNOWN, "--path", "/key/generate",
                 "--blocked-team", "team-a")
    assert run.code == 0
    assert "decision    deny 403 email_domain_not_allowed: email is not in an allowed domain\n" in run.out
    denied = run.out.split("denied by:\n")[1]
    assert [line.split(":")[0].strip() for line in denied.splitlines() if line.startswith("  ") and
            not line.startswith("    ")] == ["email_domain_not_allowed", "team_blocked", "route_not_allowed"]
    assert "    team team-a is blocked\n" in denied


def test_a_token_is_read_not_verified_and_never_printed(regate):
    def b64(doc) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    token = f"{b64({'alg': 'RS256'})}.{b64({'scope': 'openid litellm_proxy_admin', 'sub': 'ada'})}.c2lnbmF0dXJl"
    run = regate("explain", EXAMPLE, "--token", token, "--path", "/key/generate")
    assert run.code == 0
    assert 'credential  JWT claims {"scope": "openid litellm_proxy_admin", "sub": "ada"}\n' in run.out
    assert "decision    allow: allowed\n" in run.out
    assert token not in run.out + run.err and "c2lnbmF0dXJl" not in run.out + run.err

    for bad in (f"{token}.extra", f"{b64({'alg': 'RS256'})}.not-json!.c2lnbmF0dXJl"):
        run = regate("explain", EXAMPLE, "--token", bad)
        assert run.code == 2
        assert bad not in run.err and "c2lnbmF0dXJl" not in run.err
    assert regate("explain", EXAMPLE, "--token", f"{token}.extra").err == (
        "regate explain: --token: not a JWT (expected three dot-separated parts) [invalid_input]\n")


def test_a_token_from_stdin(regate, monkeypatch):
    """`--token -` keeps the token out of the process list and the shell history."""
    claims = base64.urlsafe_b64encode(json.dumps({"team_id": "team-a", "sub": "u1"}).encode()).decode().rstrip("=")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"eyJhbGciOiJSUzI1NiJ9.{claims}.c2ln\n"))
    run = regate("explain", EXAMPLE, "--token", "-", "--facts", KNOWN)
    assert run.code == 0, run.err
    assert 'credential  JWT claims {"sub": "u1", "team_id": "team-a"}\n' in run.out


def test_the_master_key_where_the_config_has_none(regate):
    config = ROOT / "tests" / "golden" / "cases" / "minimal-jwt.yaml"
    assert "master_key" not in config.read_text()
    run = regate("explain", config, "--master-key", "--json")
    assert run.code == 0
    doc = run.json()
    assert doc["decided_by"] == "enforcer" and doc["checks"] == []
    assert doc["decision"]["reasons"] == ["master_key_not_configured"] and doc["decision"]["status"] == 401
    assert regate("explain", EXAMPLE, "--master-key", "--path", "/anything").out.splitlines()[3] == "decision    allow: allowed"


def test_virtual_keys(regate):
    key = json.dumps({"team_id": "team-a", "models": ["gpt-4o-mini"]})
    run = regate("explain", EXAMPLE, "--virtual-key", key, "--model", "azure-gpt-4o")
    assert run.code == 0
    assert "decision    deny 403 model_not_allowed: this key may not use model azure-gpt-4o\n" in run.out


@pytest.mark.parametrize("args, message", [
    (["--claims", "[1, 2]"], "--claims: expected a JSON object, got list"),
    (["--claims", "{team"], "--claims: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    (["--no-credential", "--facts", '{"user_exists": "yes"}'], "input.facts.user_exists: 'yes' is not of type 'boolean'"),
    (["--no-credential", "--facts", '{"colour": 1}'],
     "input.facts: Additional properties are not allowed ('colour' was unexpected)"),
    (["--virtual-key", '{"models": "gpt-4o"}'], "input.credential.key.models: 'gpt-4o' is not of type 'array'"),
    (["--no-credential", "--facts", '{"budgets": {"proxy": {"spend": 5}}}'],
     "input.facts.budgets.proxy: 'spend_nanos' is a required property; "
     "input.facts.budgets.proxy: Additional properties are not allowed ('spend' was unexpected)"),
])
def test_bad_input_is_exit_2_with_a_clear_message(regate, args, message):
    run = regate("explain", EXAMPLE, *args)
    assert (run.code, run.out) == (2, "")
    assert run.err == f"regate explain: {message} [invalid_input]\n"


def test_a_credential_is_required(regate, capsys):
    with pytest.raises(SystemExit) as exit_:
        regate("explain", EXAMPLE)
    assert exit_.value.code == 2
    assert "one of the arguments --claims --token --master-key --virtual-key --no-credential is required" in \
        capsys.readouterr().err
