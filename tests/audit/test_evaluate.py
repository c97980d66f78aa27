"""The batch evaluation is OPA's decision and nothing else: every outcome equals what OPA's own
decision endpoint answers for the input the enforcer would send, in order, however many cases."""

from __future__ import annotations

import os
import stat

import pytest

from regate import compiler
from regate.audit import evaluate
from regate.audit.evaluate import Case, EvaluationError, Evaluator
from tests.support.opa import OpaServer

from ..compiler.conftest import ROOT

CONFIG = ROOT / "tests" / "golden" / "cases" / "litellm-full.yaml"


def jwt(claims: dict, path: str, model: str | None = None) -> dict:
    request = {"method": "POST", "path": path} | ({"model": model} if model else {})
    return {"request": request, "credential": {"type": "jwt", "claims": claims}}


@pytest.fixture(scope="module")
def config():
    return compiler.load_config(CONFIG)


@pytest.fixture(scope="module")
def plain_opa(opa_bin, config, tmp_path_factory):
    """OPA with the bundle alone, asked one decision at a time, as the enforcer asks it."""
    bundle = compiler.bundle.write(compiler.bundle_files(config), tmp_path_factory.mktemp("plain") / "b.tar.gz")
    with OpaServer(opa_bin, bundle=str(bundle)) as opa:
        opa.put_state(evaluate.STATE)
        yield opa


def test_outcomes_are_opas_decisions_with_the_enforcers_facts(config, plain_opa):
    assert "team_id_jwt_field: client_id" in CONFIG.read_text() and "user_id_jwt_field: sub" in CONFIG.read_text()
    team = {"client_id": "team-a", "sub": "u1", "email": "dev@example.com"}
    # (case for the batch, the input the enforcer would send for it)
    pairs = [
        (Case(jwt(team, "/v1/chat/completions"), {"user_exists": True, "teams": {"team-a": []}}),
         jwt(team, "/v1/chat/completions") | {"facts": {"user_id": "u1", "user_exists": True, "teams": {"team-a": []}}}),
        (Case(jwt(team, "/v1/chat/completions"), {"user_exists": False, "teams": {"team-a": []}}),
         jwt(team, "/v1/chat/completions") | {"facts": {"user_id": "u1", "user_exists": False,
                                                        "teams": {"team-a": []}}}),
        (Case(jwt(team, "/v1/chat/completions", "m2"), {"user_exists": True, "teams": {"team-a": ["m1"]}}),
         jwt(team, "/v1/chat/completions", "m2") | {"facts": {"user_id": "u1", "user_exists": True,
                                                              "teams": {"team-a": ["m1"]}}}),
        # the header names the team by an alias only the store knows
        (Case(jwt(team, "/v1/chat/completions") | {"request": {"method": "POST", "path": "/v1/chat/completions",
                                                               "requested_team": "Team A"}},
              {"user_exists": True, "teams": {"team-a": []}, "team_aliases": {"Team A": ["team-a"]}}),
         {"request": {"method": "POST", "path": "/v1/chat/completions", "requested_team": "Team A"},
          "credential": {"type": "jwt", "claims": team},
          "facts": {"user_id": "u1", "user_exists": True, "teams": {"team-a": []}, "team_aliases": {"Team A": ["team-a"]}}}),
        (Case(jwt(team, "/key/generate")), jwt(team, "/key/generate")),  # no store: the input as it is
        (Case({"request": {"method": "GET", "path": "/v1/models"},
               "credential": {"type": "virtual_key", "key": {"user_id": "u1", "team_id": None, "org_id": None,
                                                              "models": []}}}, {"user_exists": False, "teams": {}}),
         {"request": {"method": "GET", "path": "/v1/models"},
          "credential": {"type": "virtual_key", "key": {"user_id": "u1", "team_id": None, "org_id": None, "models": []}}}),
    ]
    with Evaluator(config) as opa:
        outcomes = opa.outcomes([case for case, _ in pairs])
    expected = []
    for _, doc in pairs:
        d = plain_opa.decide(doc)
        expected.append((d["allow"], d["status"], tuple(d["reasons"])))
    assert [(o.allow, o.status, o.reasons) for o in outcomes] == expected
    assert [o.summary() for o in outcomes] == ["allow", "deny user_not_found", "deny model_not_allowed", "allow",
                                               "deny route_not_allowed", "allow"]


def test_many_cases_keep_their_order(config, monkeypatch):
    """Cases are split into chunks sent side by side; the answers come back in the cases' order."""
    monkeypatch.setattr(evaluate, "CHUNK", 7)
    team = {"client_id": "team-a", "sub": "u1", "email": "dev@example.com"}
    store = {"user_exists": True, "teams": {"team-a": []}}
    paths = ["/v1/chat/completions" if n % 3 else "/key/generate" for n in range(100)]
    cases = [Case(jwt(team | {"n": n % 40}, path), store) for n, path in enumerate(paths)]
    with Evaluator(config, workers=3) as opa:
        outcomes = opa.outcomes(cases)
    assert [o.allow for o in outcomes] == [path == "/v1/chat/completions" for path in paths]


def test_an_opa_that_goes_away_is_an_error_not_an_answer(config):
    with Evaluator(config) as opa:
        opa._opa.stop()
        with pytest.raises(EvaluationError, match="^OPA did not answer POST /v1/data/regate_audit/batch/"):
            opa.outcomes([Case(jwt({"team_id": "t"}, "/v1/models"))])


def test_diff_exits_3_when_it_cannot_evaluate(regate, tmp_path, monkeypatch):
    """A diff that cannot be decided is neither "no change" (0) nor "changed" (1)."""
    broken = tmp_path / "opa"
    broken.write_text("#!/bin/sh\necho 'this OPA is broken' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    run = regate("diff", CONFIG, CONFIG)  # the fixture points REGATE_OPA_BIN at the real OPA...
    assert run.code == 0
    monkeypatch.setenv("REGATE_OPA_BIN", str(broken))  # ...and now at one that fails
    assert os.environ["REGATE_OPA_BIN"] == str(broken)
    run = regate("diff", CONFIG, CONFIG)
    assert (run.code, run.out) == (3, "")
    assert run.err.startswith("regate diff: OPA exited with status 1: this OPA is broken")
