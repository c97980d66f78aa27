"""Custom policies end to end (issue 13): the LiteLLM docs' custom_validate example, redone as
the Rego module regate ships for it, decides through the real enforcer and OPA."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import assert_openai_error, config_stack, enforcer_env

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "litellm-docs" / "custom-validate.yaml"


@pytest.fixture(scope="module")
def custom_stack(opa_bin, idp, upstream, tmp_path_factory):
    with config_stack(opa_bin, CONFIG, enforcer_env(idp, upstream), tmp_path_factory.mktemp("custom")) as client:
        yield client


def test_a_custom_policy_decides_through_the_enforcer(custom_stack, idp):
    mine = {"sub": "my-unique-user", "tenant_id": "my-unique-tenant", "claims": ["proxy-admin"]}
    status, body, _ = custom_stack.get("/v1/models", token=idp.mint(mine))
    assert status == 200, body
    status, body, headers = custom_stack.get("/v1/models", token=idp.mint(dict(mine, tenant_id="INVALID_TENANT")))
    assert status == 403 and headers.get("X-Regate-Reason") == "tenant_not_allowed", body
    assert assert_openai_error(body, 403) == "Invalid JWT token: tenant is not allowed"
