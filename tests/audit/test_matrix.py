"""`regate matrix` on the LiteLLM docs' configs, against hand-written tables of who may call what."""

from __future__ import annotations

import pytest

from regate import compiler
from regate.audit import matrix
from regate.compiler import routes

from ..compiler.conftest import ROOT

DOCS = ROOT / "examples" / "litellm-docs"


def members(group: str) -> set[str]:
    expanded = routes.expand((group,))
    return set(expanded.exact + expanded.templates)


MANAGEMENT, OPENAI, INFO = members("management_routes"), members("openai_routes"), members("info_routes")


def partly(allowed: set[str], column: set[str], reason: str = "route_not_allowed") -> str:
    """A group cell as the matrix writes it, from the paths a principal may call."""
    n, total = len(allowed & column), len(column)
    if n == total:
        return "allow"
    if n == 0:
        return f"deny {reason}"
    return f"allow {n}/{total} (deny: {reason} {total - n})"


def table(m: matrix.Matrix) -> dict[str, list[str]]:
    return {p.label: [m.cell(p, c).text() for c in m.columns] for p in m.principals}


def test_team_routes_doc_config():
    """LiteLLM docs, team routes: a team may call /v1/chat/completions only; users keep the defaults;
    the public routes (public_allowed_routes' default) are open to anyone, no credential needed."""
    m = matrix.build(compiler.load_config(DOCS / "team-routes.yaml"))
    assert [c.label for c in m.columns] == ["management_routes", "/v1/chat/completions", "openai_routes", "info_routes",
                                            "public_routes", "(any other path)"]
    user = OPENAI | INFO
    never = "deny route_not_allowed"
    assert table(m) == {
        "master key": ["allow"] * 6,
        "admin token (scope litellm_proxy_admin)": ["allow", never, never, partly(MANAGEMENT, INFO), "allow", never],
        "team token": [never, "allow", partly({"/v1/chat/completions"}, OPENAI), never, "allow", never],
        "virtual key of a team": [never, "allow", partly({"/v1/chat/completions"}, OPENAI), never, "allow", never],
        "virtual key of a user": [partly(user, MANAGEMENT), "allow", "allow", "allow", "allow", never],
        "token without a role": ["deny no_role"] * 4 + ["allow", "deny no_role"],
        "no credential": ["deny missing_credential"] * 4 + ["allow", "deny missing_credential"],
    }
    team = next(p for p in m.principals if p.label == "team token")
    assert team.credential == {"type": "jwt", "claims": {"litellm-team": "team-a"}}  # the config's team claim


def test_email_domain_upsert_doc_config():
    """LiteLLM docs, email domains + upsert: the email is the user id, unknown users are created, a token
    outside my-co.com is refused everywhere, whoever it claims to be."""
    m = matrix.build(compiler.load_config(DOCS / "email-domain-upsert.yaml"))
    assert [c.label for c in m.columns] == ["management_routes", "openai_routes", "info_routes", "public_routes",
                                            "(any other path)"]
    member = [partly(OPENAI | INFO, MANAGEMENT), "allow", "allow", "allow", "deny route_not_allowed"]

    def refused(reason: str) -> list[str]:
        return [f"deny {reason}"] * 3 + ["allow", f"deny {reason}"]

    assert table(m) == {
        "master key": ["allow"] * 5,
        "admin token (scope litellm_proxy_admin)": ["allow", "deny route_not_allowed", partly(MANAGEMENT, INFO),
                                                    "allow", "deny route_not_allowed"],
        "team token (email @my-co.com)": member,
        "internal user token (email @my-co.com)": member,
        "team token, email outside the allowed domains": refused("email_domain_not_allowed"),
        "team token of a user not in the store (email @my-co.com)": member,
        "virtual key of a team": member,
        "virtual key of a user": member,
        "token without a role": refused("no_role"),
        "no credential": refused("missing_credential"),
    }
    outside = next(p for p in m.principals if "outside" in p.label)
    assert outside.credential["claims"] == {"client_id": "team-a", "email": "dev@outside.invalid"}
    unknown = next(p for p in m.principals if "not in the store" in p.label)
    assert unknown.store == {"user_exists": False, "teams": {"team-a": []}}


def test_jwts_are_refused_everywhere_when_jwt_auth_is_off():
    m = matrix.build(compiler.load_config(ROOT / "tests" / "golden" / "cases" / "master-key-only.yaml"))
    rows = table(m)
    width = len(m.columns)
    public = [c.label for c in m.columns].index("public_routes")
    for label in ("admin token (scope litellm_proxy_admin)", "team token", "token without a role"):
        assert rows[label] == ["deny jwt_auth_disabled"] * public + ["allow"] + ["deny jwt_auth_disabled"] * (width - public - 1)
    assert rows["master key"] == ["allow"] * width
    assert [c.label for c in m.columns][0] == "management_routes"
    assert rows["virtual key of a team"][0] == partly(OPENAI | INFO, MANAGEMENT)  # keys still work: default routes


def test_a_master_key_only_counts_where_the_config_sets_one(config_file):
    m = matrix.build(compiler.load_config(config_file("c.yaml", """
        general_settings:
          enable_jwt_auth: true
    """)))
    cell = m.cell(m.principals[0], m.columns[0])
    assert m.principals[0].label == "master key"
    assert cell.outcomes[0].as_json() == {"allow": False, "status": 401, "reasons": ["master_key_not_configured"],
                                          "by": "enforcer"}


def test_templates_are_asked_as_written(config_file):
    m = matrix.build(compiler.load_config(config_file("c.yaml", """
        general_settings:
          enable_jwt_auth: true
          litellm_jwtauth:
            team_allowed_routes: ["/v1/threads/{thread_id}"]
    """)))
    team = next(p for p in m.principals if p.label == "team token")
    column = next(c for c in m.columns if c.kind == "template")
    assert (column.label, column.paths) == ("/v1/threads/{thread_id}", ("/v1/threads/{thread_id}",))
    assert m.cell(team, column).text() == "allow"


def test_cli_formats_and_team_rows(regate, tmp_path):
    config = DOCS / "team-routes.yaml"
    run = regate("matrix", config, "--format", "json", "--team", "platform")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["config"] == "team-routes.yaml" and doc["method"] == "*"
    labels = [p["label"] for p in doc["principals"]]
    assert labels[2:4] == ["team token", "team platform token"]
    platform = doc["principals"][3]
    assert platform["credential"] == {"type": "jwt", "claims": {"litellm-team": "platform"}}
    assert len(doc["decisions"]) == len(labels) * len({p for c in doc["columns"] for p in c["paths"]})
    assert {"principal": "team platform token", "method": "*", "path": "/v1/chat/completions", "model": None,
            "allow": True, "status": 200, "reasons": []} in doc["decisions"]
    assert {"principal": "team platform token", "method": "*", "path": "/key/generate", "model": None,
            "allow": False, "status": 403, "reasons": ["route_not_allowed"]} in doc["decisions"]
    assert doc["cells"][3][1] == {"allowed": 1, "total": 1, "text": "allow"}

    run = regate("matrix", config)
    assert run.code == 0
    lines = run.out.splitlines()
    assert lines[0] == "## Access matrix of `team-routes.yaml`"
    assert "| principal | management_routes | /v1/chat/completions | openai_routes | info_routes | public_routes | " \
           "(any other path) |" in lines
    assert "| team token | deny route_not_allowed | allow | allow 1/87 (deny: route_not_allowed 86) | " \
           "deny route_not_allowed | allow | deny route_not_allowed |" in lines

    out = tmp_path / "matrix.html"
    run = regate("matrix", config, "--format", "html", "-o", out)
    assert run.code == 0 and run.out == ""
    assert out.read_text().startswith("<!doctype html>")


@pytest.mark.parametrize("text, message", [
    ("general_settings:\n  litellm_jwtauth:\n    team_alowed_routes: [openai_routes]\n",
     "c.yaml:3:5: unknown key 'team_alowed_routes' in 'litellm_jwtauth' (did you mean 'team_allowed_routes'?) "
     "(at general_settings.litellm_jwtauth.team_alowed_routes) [unknown-key]\n"),
    ("general_settings:\n  litellm_jwtauth:\n    team_allowed_routes: [opnai_routes]\n",
     "c.yaml:3:27: unknown route group 'opnai_routes' (did you mean 'openai_routes'?); a route is a group name or a "
     "path starting with '/' (at general_settings.litellm_jwtauth.team_allowed_routes[0]) [unknown-route-group]\n"),
])
def test_a_bad_config_is_exit_2_with_located_errors(regate, tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    run = regate("matrix", path)
    assert run.code == 2 and run.out == ""
    assert run.err == f"{path.parent}/{message}"
