"""Custom policies (litellm_jwtauth.custom_policies) in decisions, on a real OPA: the docs'
custom_validate example redone in Rego, and how malformed or clashing deny objects fail closed."""

from __future__ import annotations

import pytest

from regate import compiler
from tests.support.opa import OpaServer

from .conftest import STATE
from .test_decisions import check, jwt

MINE = {"sub": "my-unique-user", "tenant_id": "my-unique-tenant", "claims": ["proxy-admin"]}
KNOWN = {"user_id": "my-unique-user", "user_exists": True}
TABLE = [
    ("my tenant with the claim", jwt(MINE, facts=KNOWN), True, 200, None),
    ("another tenant", jwt(dict(MINE, tenant_id="INVALID_TENANT"), facts=KNOWN), False, 403, "tenant_not_allowed"),
    ("no allowed claim", jwt(dict(MINE, claims=["viewer"]), facts=KNOWN), False, 403, "claims_not_allowed"),
    ("built-in denials first", jwt(dict(MINE, tenant_id="x"), "/key/generate", facts=KNOWN), False, 403, "route_not_allowed"),
    ("not for the master key", {"request": {"method": "POST", "path": "/v1/chat/completions"}, "credential": {"type": "master_key"}},
     True, 200, None),
    ("not without a credential", {"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "none"}},
     False, 401, "missing_credential"),
    ("not on public routes", {"request": {"method": "GET", "path": "/routes"},
                              "credential": {"type": "jwt", "claims": {"tenant_id": "x"}}}, True, 200, None),
]


@pytest.mark.parametrize("label,doc,allow,status,reason", TABLE, ids=[r[0] for r in TABLE])
def test_custom_validate_example(opa_for, label, doc, allow, status, reason):
    check(opa_for("litellm-docs/custom-validate").decide(doc), allow, status, reason)


def test_custom_codes_follow_the_built_in_ones_with_their_messages(opa_for):
    decision = opa_for("litellm-docs/custom-validate").decide(jwt({"sub": "my-unique-user", "tenant_id": "x"}, "/key/generate",
                                                                  facts=KNOWN))
    assert decision["reasons"] == ["route_not_allowed", "claims_not_allowed", "tenant_not_allowed"]
    decision = opa_for("litellm-docs/custom-validate").decide(jwt(dict(MINE, tenant_id="x"), facts=KNOWN))
    assert (decision["status"], decision["message"]) == (403, "Invalid JWT token: tenant is not allowed")


MALFORMED = """\
package regate.custom.odd

deny contains {"code": "team_blocked", "message": "clash", "status": 403} if input.request.path == "/clash"

deny contains {"code": "Bad Code", "message": "m", "status": 403} if input.request.path == "/code"

deny contains {"code": "ok_code", "message": "m", "status": 200} if input.request.path == "/status"

deny contains {"code": "teapot", "message": "short and stout", "status": 418} if input.request.path == "/v1/chat/completions"
"""


@pytest.fixture(scope="module")
def odd_opa(opa_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("custom")
    (work / "odd.rego").write_text(MALFORMED)
    (work / "c.yaml").write_text("general_settings:\n  enable_jwt_auth: true\n  litellm_jwtauth:\n"
                                 "    team_allowed_routes: [/clash, /code, /status, /v1/chat/completions]\n"
                                 "    custom_policies: [odd.rego]\n")
    bundle = compiler.bundle.write(compiler.bundle_files(compiler.load_config(work / "c.yaml")), work / "b.tar.gz")
    with OpaServer(opa_bin, bundle=str(bundle)) as opa:
        opa.put_state(STATE)
        yield opa


@pytest.mark.parametrize("path", ["/clash", "/code", "/status"])
def test_a_malformed_or_clashing_deny_object_still_denies(odd_opa, path):
    decision = odd_opa.decide(jwt({"client_id": "t1"}, path))
    check(decision, False, 500, "custom_denial_malformed")
    assert decision["message"].startswith("custom policy odd denies with a malformed object: ")


def test_a_custom_status_is_used(odd_opa):
    decision = odd_opa.decide(jwt({"client_id": "t1"}))
    check(decision, False, 418, "teapot")
    assert decision["message"] == "short and stout"
