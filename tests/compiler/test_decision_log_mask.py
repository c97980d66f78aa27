"""The bundle's decision-log mask, applied by a real OPA to its real decision log: of a token's
claims only the identity ids stay (team, team list, user, organization, end user, object id,
iss, per issuer where an issuers entry names its own; the email only where it is the user id),
while the decision OPA answers stays whole."""

from __future__ import annotations

import pytest

from regate import compiler
from regate.compiler.render import MASK_DECISION
from tests.support.decision_log import decisions
from tests.support.opa import OpaServer

from .conftest import SHIPPED

PRIVATE = {"name": "Private Name", "nickname": "private-nick", "phone": "+1-555-private"}
KEYCLOAK = "https://keycloak.example.com/realms/my-realm"


@pytest.mark.parametrize("name, claims, issuer, kept, email_erased", [
    # the team list is ids (team_ids_jwt_field); iss is the issuer's id
    ("examples/regate",
     {"team_id": "t1", "sub": "u1", "org_id": "o1", "customer_id": "c1", "email": "u1@example.com",
      "groups": ["t1", "t2"], "iss": "https://idp.example.com"}, None,
     {"team_id": "t1", "sub": "u1", "org_id": "o1", "customer_id": "c1", "groups": ["t1", "t2"],
      "iss": "https://idp.example.com"}, True),
    ("cases/nested-claims",
     {"realm_access": {"team": "t1", "roles": ["private-role"]}, "sub": "u1", "https://example.com/claims/org": "o1",
      "profile": {"email": "u1@example.com"}}, None,
     {"realm_access": {"team": "t1"}, "sub": "u1", "https://example.com/claims/org": "o1"}, True),
    # no user_id_jwt_field: the email is the user id, so it stays
    ("litellm-docs/email-domain-upsert",
     {"client_id": "t1", "email": "u1@my-co.com"}, None, {"client_id": "t1", "email": "u1@my-co.com"}, False),
    # roles and user roles are no ids; the object id (here a team's) is
    ("cases/keycloak-roles",
     {"sub": "u1", "azp": "t1", "resource_access": {"litellm-proxy": {"roles": ["ai-team"]}},
      "realm_access": {"roles": ["llm-users"]}}, None, {"sub": "u1", "azp": "t1"}, False),
    # an issuer's own claim fields: its user id and team list stay, its email (not the user id here) does not
    ("litellm-docs/issuers-per-issuer",
     {"client_id": "t1", "sub": "u1", "email": "u1@example.com", "groups": ["t1"], "iss": KEYCLOAK}, KEYCLOAK,
     {"client_id": "t1", "sub": "u1", "groups": ["t1"], "iss": KEYCLOAK}, True),
])
def test_only_identity_ids_reach_the_decision_log(opa_bin, compiled, tmp_path, name, claims, issuer, kept, email_erased):
    assert name in SHIPPED
    bundle = compiler.bundle.write(compiled[name], tmp_path / "bundle.tar.gz")
    opa = OpaServer(opa_bin, bundle=str(bundle), extra_args=(
        "--set", "decision_logs.console=true", "--set", f"decision_logs.mask_decision={MASK_DECISION}"))
    with opa:
        opa.put_state({"blocked_teams": {}, "sync_id": "test"})
        credential = {"type": "jwt", "claims": claims | PRIVATE} | ({"issuer": issuer} if issuer else {})
        token = {"request": {"method": "GET", "path": "/v1/models"}, "credential": credential,
                 "facts": {"teams": {"t1": []}, "user_id": "u1", "user_exists": True}}
        answer = opa.decide(token)
        assert answer["subject"]["team_id"] == "t1"  # the caller's answer is not masked
        assert opa.decide({"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "master_key"}})
        logged = opa.wait(lambda: len(decisions(opa.log_lines)) >= 2 and decisions(opa.log_lines))
    entries = {e["input"]["credential"]["type"]: e for e in logged.values()}
    jwt = entries["jwt"]
    assert jwt["input"]["credential"]["claims"] == kept
    assert jwt["input"]["credential"].get("issuer") == issuer
    assert jwt["input"]["request"] == token["request"]
    assert jwt["masked"] == ["/input/credential/claims"]
    assert ("/result/subject/email" in jwt.get("erased", [])) is email_erased
    assert "email" not in jwt["result"]["subject"] if email_erased else \
        jwt["result"]["subject"]["email"] == answer["subject"]["email"]
    assert "masked" not in entries["master_key"] and "erased" not in entries["master_key"]
    assert "private" not in "\n".join(opa.log_lines).lower()
