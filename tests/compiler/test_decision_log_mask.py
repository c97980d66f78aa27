"""The bundle's decision-log mask, applied by a real OPA to its real decision log: of a token's
claims only the identity ids stay (team, user, organization, end user; the email only where it
is the user id), while the decision OPA answers stays whole."""

from __future__ import annotations

import pytest

from regate import compiler
from regate.compiler.render import MASK_DECISION
from tests.support.decision_log import decisions
from tests.support.opa import OpaServer

from .conftest import SHIPPED

PRIVATE = {"name": "Private Name", "groups": ["private-group"], "phone": "+1-555-private"}


@pytest.mark.parametrize("name, claims, kept, email_erased", [
    ("examples/regate",
     {"team_id": "t1", "sub": "u1", "org_id": "o1", "customer_id": "c1", "email": "u1@example.com"},
     {"team_id": "t1", "sub": "u1", "org_id": "o1", "customer_id": "c1"}, True),
    ("cases/nested-claims",
     {"realm_access": {"team": "t1", "roles": ["private-role"]}, "sub": "u1", "https://example.com/claims/org": "o1",
      "profile": {"email": "u1@example.com"}},
     {"realm_access": {"team": "t1"}, "sub": "u1", "https://example.com/claims/org": "o1"}, True),
    # no user_id_jwt_field: the email is the user id, so it stays
    ("litellm-docs/email-domain-upsert",
     {"client_id": "t1", "email": "u1@my-co.com"}, {"client_id": "t1", "email": "u1@my-co.com"}, False),
])
def test_only_identity_ids_reach_the_decision_log(opa_bin, compiled, tmp_path, name, claims, kept, email_erased):
    assert name in SHIPPED
    bundle = compiler.bundle.write(compiled[name], tmp_path / "bundle.tar.gz")
    opa = OpaServer(opa_bin, bundle=str(bundle), extra_args=(
        "--set", "decision_logs.console=true", "--set", f"decision_logs.mask_decision={MASK_DECISION}"))
    with opa:
        opa.put_state({"blocked_teams": {}, "sync_id": "test"})
        token = {"request": {"method": "GET", "path": "/v1/models"},
                 "credential": {"type": "jwt", "claims": claims | PRIVATE}}
        answer = opa.decide(token)
        assert answer["subject"]["team_id"] == "t1"  # the caller's answer is not masked
        assert opa.decide({"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "master_key"}})
        logged = opa.wait(lambda: len(decisions(opa.log_lines)) >= 2 and decisions(opa.log_lines))
    entries = {e["input"]["credential"]["type"]: e for e in logged.values()}
    jwt = entries["jwt"]
    assert jwt["input"]["credential"]["claims"] == kept
    assert jwt["input"]["request"] == token["request"]
    assert jwt["masked"] == ["/input/credential/claims"]
    assert ("/result/subject/email" in jwt.get("erased", [])) is email_erased
    assert "email" not in jwt["result"]["subject"] if email_erased else jwt["result"]["subject"]["email"]
    assert "masked" not in entries["master_key"] and "erased" not in entries["master_key"]
    assert "private" not in "\n".join(opa.log_lines).lower()
