"""public_allowed_routes end to end (issue 13): LiteLLM's public_routes are open to callers
without a credential (regate serves none of them: 404 after the allow), everything else is not."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", ["/", "/routes", "/.well-known/litellm-ui-config"])
def test_public_routes_need_no_credential(client, path):
    status, body, headers = client.get(path)
    assert status == 404 and headers.get("X-Regate-Reason") == "http_404", body


def test_other_routes_still_need_one(client, idp):
    status, body, headers = client.get("/v1/models")
    assert status == 401 and headers.get("X-Regate-Reason") == "missing_credential", body
    status, body, headers = client.get("/routes", token=idp.mint({"team_id": "t", "sig": 1}) + "x")
    assert status == 401, body  # a credential that is present must be valid, even on a public route
