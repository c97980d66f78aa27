"""`regate explain` for the LiteLLM-parity and budget surface: the x-litellm-team-id header, an
issuer's tokens, budget facts, public routes and custom policies — each denial with its rule and
the config line behind it, read from the generated Rego and the YAML."""

from __future__ import annotations

import json

from ..compiler.conftest import ROOT
from .test_explain import config_line, rule_line

DOCS = ROOT / "examples" / "litellm-docs"
FULL = ROOT / "tests" / "golden" / "cases" / "litellm-full.yaml"
TEAMS = DOCS / "team-model-access.yaml"
GROUPS = json.dumps({"sub": "u1", "groups": ["team-a", "team-b"]})
STORE = json.dumps({"user_id": "u1", "user_exists": True, "teams": {"team-a": [], "team-b": ["gpt-4o"], "team-c": []}})


def test_the_team_header_selects_a_granted_team(regate):
    doc = regate("explain", TEAMS, "--claims", GROUPS, "--facts", STORE, "--team", "team-b", "--json").json()
    assert doc["input"]["request"]["requested_team"] == "team-b"
    assert doc["decision"]["allow"] is True and doc["decision"]["subject"]["team_id"] == "team-b"
    # the team it runs as bounds the model: team-b has gpt-4o only
    doc = regate("explain", TEAMS, "--claims", GROUPS, "--facts", STORE, "--team", "team-b", "--model", "gpt-4o-mini",
                 "--json").json()
    assert doc["decision"]["reasons"] == ["model_not_allowed"]
    assert doc["decision"]["message"] == "team team-b may not use model gpt-4o-mini"


def test_a_team_the_token_was_not_granted(regate):
    run = regate("explain", TEAMS, "--claims", GROUPS, "--facts", STORE, "--team", "team-c")
    assert (run.code, run.err) == (0, "")
    rule = rule_line(TEAMS, '_access_denials["team_not_granted"]')
    assert run.out == (
        f"config      {TEAMS}\n"
        "request     POST /v1/chat/completions x-litellm-team-id team-c\n"
        'credential  JWT claims {"groups": ["team-a", "team-b"], "sub": "u1"}\n'
        "decision    deny 403 team_not_granted: x-litellm-team-id team-c is not a team of this credential "
        "(granted: team-a, team-b)\n"
        "role        team\n"
        "subject     user_id=u1\n"
        f"facts       {json.dumps(json.loads(STORE), sort_keys=True)}\n"
        "\n"
        "denied by:\n"
        "  team_not_granted: Team not granted\n"
        "    x-litellm-team-id team-c is not a team of this credential (granted: team-a, team-b)\n"
        f"    rule    data.regate.authz._access_denials.team_not_granted (regate/authz.rego:{rule})\n"
        "    config  general_settings.litellm_jwtauth.team_id_jwt_field (default)\n"
        f"    config  general_settings.litellm_jwtauth.team_ids_jwt_field ({TEAMS}:{config_line(TEAMS, 'team_ids_jwt_field')})\n"
        "\n"
        "15 other checks passed, did not apply or were not reached (--json lists every check).\n")


def test_budget_facts_show_budget_exceeded_with_its_config(regate):
    facts = {"user_id": "u1", "user_exists": True, "teams": {"team-a": []},
             "budgets": {"proxy": {"spend_nanos": 1_000_500_000_000, "reset_at": "2026-12-31T00:00:00Z"}}}
    claims = json.dumps({"client_id": "team-a", "sub": "u1"})
    run = regate("explain", FULL, "--claims", claims, "--facts", json.dumps(facts))
    assert run.code == 0
    message = "Budget has been exceeded! Current cost: 1000.5, Max budget: 1000.5 (the budget resets at 2026-12-31T00:00:00Z)"
    assert f"decision    deny 400 budget_exceeded: {message}\n" in run.out
    denied = run.out.split("denied by:\n")[1]
    rule = rule_line(FULL, '_access_denials["budget_exceeded"]')
    assert denied.startswith(
        "  budget_exceeded: Budget exceeded\n"
        f"    {message}\n"
        f"    rule    data.regate.authz._access_denials.budget_exceeded (regate/authz.rego:{rule})\n"
        f"    config  litellm_settings.max_budget ({FULL}:{config_line(FULL, 'max_budget')})\n"
        f"    config  litellm_settings.budget_duration ({FULL}:{config_line(FULL, 'budget_duration')})\n"
        f"    config  litellm_settings.max_end_user_budget ({FULL}:{config_line(FULL, 'max_end_user_budget')})\n")
    # under the budget, the same request is allowed
    facts["budgets"]["proxy"]["spend_nanos"] -= 1
    assert "decision    allow: allowed\n" in regate("explain", FULL, "--claims", claims, "--facts", json.dumps(facts)).out


def test_an_issuers_tokens_are_read_with_its_claim_fields(regate):
    config = DOCS / "issuers-claim-mapping.yaml"
    google = "https://accounts.google.com"
    doc = regate("explain", config, "--claims", json.dumps({"iss": google, "sub": "team-g"}),
                 "--facts", json.dumps({"teams": {"team-g": []}}), "--json").json()
    assert doc["input"]["credential"] == {"type": "jwt", "claims": {"iss": google, "sub": "team-g"}, "issuer": google}
    assert doc["decision"]["allow"] is True and doc["decision"]["subject"]["team_id"] == "team-g"  # its sub is a team
    # an iss no entry lists: the top-level claim fields (client_id), so sub names nobody
    doc = regate("explain", config, "--claims", json.dumps({"iss": "https://other.example", "sub": "team-g"}),
                 "--json").json()
    assert "issuer" not in doc["input"]["credential"]
    assert doc["decision"]["reasons"] == ["no_role"]
    text = regate("explain", config, "--claims", json.dumps({"iss": google, "sub": "team-g"})).out
    assert f'credential  JWT claims {{"iss": "{google}", "sub": "team-g"}} (issuer {google})\n' in text


def test_a_public_route_is_judged_on_nothing_else(regate):
    run = regate("explain", TEAMS, "--no-credential", "--method", "GET", "--path", "/health/liveliness")
    assert run.code == 0
    rule = rule_line(TEAMS, "denials := {} if {")
    assert run.out.endswith(
        "decision    allow: allowed\n"
        "role        -\n"
        "subject     -\n"
        "\n"
        "allowed by:\n"
        "  public_route: Public route\n"
        f"    rule    data.regate.authz.denials (regate/authz.rego:{rule})\n"
        "    config  general_settings.litellm_jwtauth.public_allowed_routes (default)\n"
        "\n"
        "15 other checks passed, did not apply or were not reached (--json lists every check).\n")
    checks = regate("explain", TEAMS, "--no-credential", "--path", "/health/liveliness", "--json").json()["checks"]
    assert {c["outcome"] for c in checks[1:]} == {"not_reached"}


def test_a_custom_policy_denial_names_the_policy(regate):
    config = DOCS / "custom-validate.yaml"
    claims = json.dumps({"sub": "my-unique-user", "tenant_id": "INVALID_TENANT"})
    facts = json.dumps({"user_id": "my-unique-user", "user_exists": True, "teams": {"INVALID_TENANT": []}})
    run = regate("explain", config, "--claims", claims, "--facts", facts)
    assert run.code == 0
    assert "decision    deny 403 claims_not_allowed: " in run.out
    denied = run.out.split("denied by:\n")[1]
    line = config_line(config, "custom_policies")
    rule = rule_line(config, "_custom_reasons := custom_checks.reasons if {")
    for code in ("claims_not_allowed", "tenant_not_allowed"):  # both of the policy's denials, each with its message
        assert f"  {code}: Custom policies\n" in denied
        assert (f"    rule    data.regate.authz._custom_reasons (regate/authz.rego:{rule})\n"
                f"    config  general_settings.litellm_jwtauth.custom_policies[0] ({config}:{line}): custom_validate.rego\n"
                ) in denied
    assert "    Invalid JWT token: tenant is not allowed\n" in denied
    doc = regate("explain", config, "--claims", claims, "--facts", facts, "--json").json()
    custom = [c for c in doc["checks"] if c["stage"] == "custom"]
    assert [(c["reason"], c["outcome"]) for c in custom] == [("claims_not_allowed", "deny"), ("tenant_not_allowed", "deny")]
    assert [c["reason"] for c in doc["checks"]][-2:] == ["tenant_not_allowed", "budget_exceeded"]  # the decision's order
