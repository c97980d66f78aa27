"""Several identity providers end to end (issue 13): two IdP stand-ins with distinct keys published
under the same `kid`, each listed in litellm_jwtauth.issuers (one with its own jwks_url and
audience, one found through its OpenID discovery document, whose `sub` names a team), and no
JWT_PUBLIC_KEY_URL: the real enforcer verifies each token with its own issuer's keys only."""

from __future__ import annotations

import time

import pytest

from tests.support.forge import generate_key
from tests.support.idp import IdentityProvider

from .conftest import MASTER_KEY, UPSTREAM_KEY, assert_openai_error, chat_body, config_stack

SHARED_KID = "shared-kid"


def reason(headers) -> str | None:
    return headers.get("X-Regate-Reason")


@pytest.fixture(scope="module")
def providers():
    with IdentityProvider(keys=[generate_key("RSA", kid=SHARED_KID)], audience="aud-a") as a, \
            IdentityProvider(keys=[generate_key("RSA", kid=SHARED_KID)], audience=None) as b:
        yield a, b


@pytest.fixture(scope="module")
def issuers_stack(opa_bin, providers, upstream, tmp_path_factory):
    a, b = providers
    work = tmp_path_factory.mktemp("issuers")
    config = work / "issuers.yaml"
    config.write_text(f"""\
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: os.environ/OPENAI_API_BASE, api_key: os.environ/OPENAI_API_KEY}}
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  enable_jwt_auth: true
  litellm_jwtauth:
    team_id_jwt_field: team_id
    issuers:
      - issuer: {a.issuer}
        jwks_url: {a.jwks_url}
        audience: aud-a
      - issuer: {b.issuer}
        disable_audience_validation: true
        team_id_jwt_field: sub
""")
    env = {"LITELLM_MASTER_KEY": MASTER_KEY, "OPENAI_API_BASE": upstream.openai_base, "OPENAI_API_KEY": UPSTREAM_KEY}
    with config_stack(opa_bin, config, env, work) as client:
        yield client


def spend_teams(client, count: int, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        status, rows, _ = client.get("/spend/logs", token=MASTER_KEY)
        assert status == 200, rows
        if len(rows) >= count or time.monotonic() > deadline:
            return sorted(row["team_id"] for row in rows)
        time.sleep(0.1)


def test_each_providers_tokens_pass_with_its_own_claims(issuers_stack, providers, fresh_upstream):
    a, b = providers
    assert issuers_stack.post("/v1/chat/completions", chat_body(), token=a.mint({"team_id": "team-of-a"}))[0] == 200
    # B's sub names the team (its own team_id_jwt_field); B's keys are found through its discovery document.
    status, body, _ = issuers_stack.post("/v1/chat/completions", chat_body(), token=b.mint({"sub": "team-of-b"}))
    assert status == 200, body
    assert b.discovery_count >= 1
    assert spend_teams(issuers_stack, 2) == ["team-of-a", "team-of-b"]
    assert len(fresh_upstream.requests) == 2


@pytest.mark.parametrize("case, code", [
    ("A's key, B's issuer", "bad_signature"),
    ("B's key, A's issuer", "bad_signature"),
    ("A's token for another audience", "bad_audience"),
    ("an issuer nobody listed", "unknown_issuer"),
])
def test_a_token_is_verified_by_its_own_issuers_keys_only(issuers_stack, providers, fresh_upstream, case, code):
    a, b = providers
    token = {
        "A's key, B's issuer": lambda: a.mint({"iss": b.issuer, "sub": "team-x"}),
        "B's key, A's issuer": lambda: b.mint({"iss": a.issuer, "aud": "aud-a", "team_id": "team-x"}),
        "A's token for another audience": lambda: a.mint({"aud": "aud-b", "team_id": "team-x"}),
        "an issuer nobody listed": lambda: a.mint({"iss": "https://elsewhere.example", "team_id": "team-x"}),
    }[case]()
    status, body, headers = issuers_stack.post("/v1/chat/completions", chat_body(), token=token)
    assert status == 401 and reason(headers) == code, body
    assert_openai_error(body, 401)
    assert fresh_upstream.requests == []

