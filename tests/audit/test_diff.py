"""`regate diff` on crafted pairs of configs: each kind of widening and narrowing a reviewer could
miss, with the exact cells that change and the exact exit code (0 none, 1 changed, 2 config error)."""

from __future__ import annotations

import pytest

from regate.audit import diff as audit_diff
from regate.audit.columns import Column
from regate.audit.evaluate import Outcome
from regate.audit.markdown import COMMENT_LIMIT, diff_markdown
from regate.audit.principals import Principal
from regate.compiler import routes

BASE = """
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  enable_jwt_auth: true
  litellm_jwtauth:
    admin_jwt_scope: litellm_proxy_admin
    admin_allowed_routes: [/key/generate]
    team_id_jwt_field: team_id
    team_allowed_routes: [/v1/chat/completions, /v1/models]
    user_allowed_routes: [/v1/models]
    user_id_jwt_field: sub
    user_email_jwt_field: email
    user_allowed_email_domain: [example.com]
"""

TEAM = "team token (email @example.com)"
UNKNOWN = "team token of a user not in the store (email @example.com)"
KEY = "virtual key of a team"
ALLOW = {"allow": True, "status": 200, "reasons": []}


def deny(status: int, *reasons: str) -> dict:
    return {"allow": False, "status": status, "reasons": list(reasons)}


def change(principal: str, path: str, before: dict, after: dict) -> dict:
    return {"principal": principal, "method": "*", "path": path, "model": None, "before": before, "after": after}


def diff_json(pair, old: str, new: str) -> tuple[int, list[dict]]:
    run = pair(old, new, "--format", "json")
    return run.code, run.json()


def test_the_same_config_changes_nothing(pair):
    run = pair(BASE, BASE)
    assert (run.code, run.err) == (0, "")
    assert run.out.startswith("no access changes between ") and run.out.endswith(" decisions compared)\n")
    markdown = pair(BASE, BASE, "--format", "markdown")
    assert markdown.code == 0 and "No access changes: all " in markdown.out
    assert pair(BASE, BASE, "--format", "json").json() == []


def test_a_literal_route_added_to_a_role(pair):
    new = BASE.replace("team_allowed_routes: [/v1/chat/completions, /v1/models]",
                       "team_allowed_routes: [/v1/chat/completions, /v1/models, /key/info]")
    code, changes = diff_json(pair, BASE, new)
    assert code == 1
    assert changes == [
        change(TEAM, "/key/info", deny(403, "route_not_allowed"), ALLOW),
        # the unknown user still cannot call it, for another reason now
        change(UNKNOWN, "/key/info", deny(403, "route_not_allowed", "user_not_found"), deny(401, "user_not_found")),
        change(KEY, "/key/info", deny(403, "route_not_allowed"), ALLOW),
    ]


def test_a_group_added_to_a_role_widens_it_by_every_member(pair):
    new = BASE.replace("team_allowed_routes: [/v1/chat/completions, /v1/models]",
                       "team_allowed_routes: [/v1/chat/completions, /v1/models, info_routes]")
    code, changes = diff_json(pair, BASE, new)
    assert code == 1
    info = routes.expand(("info_routes",))
    gained = sorted(set(info.exact + info.templates) - {"/v1/models"})
    widened = sorted((c["principal"], c["path"]) for c in changes if c["after"]["allow"])
    assert widened == sorted((who, path) for who in (TEAM, KEY) for path in gained)
    assert all(c["before"]["reasons"][0] == "route_not_allowed" for c in changes)
    # the markdown names the group instead of listing what it brought
    markdown = pair(BASE, new, "--format", "markdown").out
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {TEAM} | "))
    assert row.endswith(f", and {len(gained) - 8} more | deny route_not_allowed | **allow** |"), row


def test_a_route_removed_narrows(pair):
    new = BASE.replace("team_allowed_routes: [/v1/chat/completions, /v1/models]",
                       "team_allowed_routes: [/v1/chat/completions]")
    code, changes = diff_json(pair, BASE, new)
    assert code == 1
    assert changes == [
        change(TEAM, "/v1/models", ALLOW, deny(403, "route_not_allowed")),
        change(UNKNOWN, "/v1/models", deny(401, "user_not_found"), deny(403, "route_not_allowed", "user_not_found")),
        change(KEY, "/v1/models", ALLOW, deny(403, "route_not_allowed")),
    ]
    text = pair(BASE, new).out.splitlines()
    assert text[0].startswith("3 decisions change (0 widen access, 2 narrow it, 1 change only the reason) of ")


def test_a_domain_added(pair):
    new = BASE.replace("user_allowed_email_domain: [example.com]",
                       "user_allowed_email_domain: [example.com, partner.example.org]")
    code, changes = diff_json(pair, BASE, new)
    assert code == 1
    partner = "team token (email @partner.example.org)"
    assert {c["principal"] for c in changes} == {partner}  # a token only the new config names, judged by both
    by_path = {c["path"]: (c["before"], c["after"]) for c in changes}
    assert by_path["/v1/chat/completions"] == (deny(403, "email_domain_not_allowed"), ALLOW)
    assert by_path["/v1/models"] == (deny(403, "email_domain_not_allowed"), ALLOW)
    assert by_path["/key/generate"] == (deny(403, "email_domain_not_allowed", "route_not_allowed"),
                                        deny(403, "route_not_allowed"))
    markdown = pair(BASE, new, "--format", "markdown").out
    assert f"| {partner} | `/v1/chat/completions`, `/v1/models` | deny email_domain_not_allowed | **allow** |" in markdown


def test_a_domain_removed(pair):
    old = BASE.replace("user_allowed_email_domain: [example.com]", "user_allowed_email_domain: [example.com, old.example.org]")
    code, changes = diff_json(pair, old, BASE)
    assert code == 1
    narrowed = {(c["principal"], c["path"]) for c in changes if c["before"]["allow"] and not c["after"]["allow"]}
    assert narrowed == {("team token (email @old.example.org)", p) for p in ("/v1/chat/completions", "/v1/models")}


def test_the_admin_scope_renamed(pair):
    new = BASE.replace("admin_jwt_scope: litellm_proxy_admin", "admin_jwt_scope: platform-admin")
    code, changes = diff_json(pair, BASE, new)
    assert code == 1
    assert [c for c in changes if c["before"]["allow"] != c["after"]["allow"]] == [
        change("admin token (scope litellm_proxy_admin)", "/key/generate", ALLOW, deny(403, "no_role")),
        change("admin token (scope platform-admin)", "/key/generate", deny(403, "no_role"), ALLOW),
    ]
    # elsewhere the tokens are refused either way, now (or no longer) for having no role
    assert {(c["principal"], c["before"]["reasons"][0], c["after"]["reasons"][0]) for c in changes
            if c["path"] != "/key/generate"} == {
        ("admin token (scope litellm_proxy_admin)", "route_not_allowed", "no_role"),
        ("admin token (scope platform-admin)", "no_role", "route_not_allowed")}


def test_the_master_key_removed(pair):
    new = BASE.replace("  master_key: os.environ/LITELLM_MASTER_KEY\n", "")
    code, changes = diff_json(pair, BASE, new)
    assert code == 1
    assert {c["principal"] for c in changes} == {"master key"}
    assert all(c["before"] == ALLOW for c in changes)
    assert {c["after"]["reasons"][0] for c in changes} == {"master_key_not_configured"}
    assert changes[0]["after"] == deny(401, "master_key_not_configured") | {"by": "enforcer"}


def test_jwt_auth_turned_off(pair):
    new = BASE.replace("enable_jwt_auth: true", "enable_jwt_auth: false")
    code, changes = diff_json(pair, BASE, new)
    assert code == 1
    assert {c["after"]["reasons"][0] for c in changes} == {"jwt_auth_disabled"}
    assert {c["principal"] for c in changes} == {"admin token (scope litellm_proxy_admin)", TEAM, UNKNOWN,
                                                 "internal user token (email @example.com)",
                                                 "team token, email outside the allowed domains", "token without a role"}


def test_user_upsert_turned_on(pair):
    new = BASE.replace("    user_id_jwt_field: sub\n", "    user_id_jwt_field: sub\n    user_id_upsert: true\n")
    code, changes = diff_json(pair, BASE, new)
    assert code == 1
    assert changes == [change(UNKNOWN, path, deny(401, "user_not_found"), ALLOW)
                       for path in ("/v1/chat/completions", "/v1/models")]


def test_the_team_claim_renamed(pair):
    """Tokens keep their claims: a token carrying the old claim loses the team role."""
    new = BASE.replace("team_id_jwt_field: team_id", "team_id_jwt_field: groups")
    code, changes = diff_json(pair, BASE, new)
    assert code == 1
    lost = {(c["principal"], c["path"]) for c in changes if c["before"]["allow"] and not c["after"]["allow"]}
    assert (f"{TEAM} [JWT claims {{\"email\": \"dev@example.com\", \"sub\": \"user-1\", \"team_id\": \"team-a\"}}]",
            "/v1/chat/completions") in lost


@pytest.mark.parametrize("bad, message", [
    # regate has no blocked teams in the config (they are runtime state: /team/block), so "a team
    # removed from blocks in config" cannot be written; a key that tries is an error, not ignored.
    ("    blocked_teams: [team-x]\n", "new.yaml:13:5: unknown key 'blocked_teams' in 'litellm_jwtauth'"),
    # role mappings without the claim holding the roles mean nothing: a located error.
    ("    role_mappings: [{role: admin, internal_role: proxy_admin}]\n",
     "new.yaml:13:20: role_mappings needs roles_jwt_field: the claim holding the roles to map"),
])
def test_a_config_error_is_exit_2_with_its_location(pair, bad, message):
    run = pair(BASE, BASE + bad)
    assert run.code == 2 and run.out == ""
    assert message in run.err
    assert pair(BASE + bad, BASE).code == 2


def test_markdown_fits_a_pull_request_comment():
    """However many cells change, the comment stays under GitHub's limit and says what it left out."""
    principals = [Principal(f"team t{i} token", "team_token", {"type": "jwt", "claims": {"t": i}}) for i in range(300)]
    paths = [f"/route/{n}" for n in range(400)]
    changes = [audit_diff.Change(p, path, None, Outcome(False, 403, ("route_not_allowed",)),
                                 Outcome(True, 200) if n % 2 else Outcome(False, 401, ("user_not_found",)))
               for p in principals for n, path in enumerate(paths)]
    d = audit_diff.Diff("old.yaml", "new.yaml", changes, len(changes), [Column("many", "group", tuple(paths[::2]))])
    markdown = diff_markdown(d)
    assert len(markdown) < COMMENT_LIMIT < 65_536
    assert "more rows left out to fit a comment: run `regate diff --format json`." in markdown
    assert "**120000 decisions change (60000 widen access, 0 narrow it, 60000 change only the reason)" in markdown
    # a whole route group is named, not listed
    assert "| team t0 token | all of `many` (200 paths) | deny route_not_allowed | deny user_not_found |" in markdown
