"""The gate under a WSGI server other than `regate serve`: the decided path is the dispatched one."""

from __future__ import annotations

from pathlib import Path

import pytest

from regate import compiler
from regate.enforcer.app import create_app
from regate.enforcer.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "regate.yaml"
ENV = {"LITELLM_MASTER_KEY": "sk-gate-master-key", "OPENAI_API_BASE": "http://127.0.0.1:9/v1",
       "OPENAI_API_KEY": "sk-upstream", "AZURE_API_BASE": "http://127.0.0.1:9", "AZURE_API_KEY": "sk-upstream"}


@pytest.fixture
def client(tmp_path):
    # Nothing started and OPA unreachable: every request here must be refused before a decision.
    settings = Settings.from_config(compiler.load_config(EXAMPLE), opa_url="http://127.0.0.1:9",
                                    environ={**ENV, "REGATE_DATA_DIR": str(tmp_path)})
    app = create_app(settings, start=False)
    yield app.test_client()
    app.extensions["regate"].close()


@pytest.mark.parametrize(("raw_uri", "script_name", "path_info"), [
    ("/v1/chat/completions", "/v1/chat", "/completions"),  # a SCRIPT_NAME header a server trusted
    ("/v1/chat/completions", "", "/completions"),  # a server that rewrote PATH_INFO
    ("/spend/logs", "/spend", "/logs"),
])
def test_a_request_routed_elsewhere_than_its_target_is_refused(client, raw_uri, script_name, path_info):
    response = client.post(path_info, json={"model": "gpt-4o-mini"},
                           headers={"Authorization": "Bearer sk-gate-master-key"},
                           environ_overrides={"RAW_URI": raw_uri, "SCRIPT_NAME": script_name})
    assert response.status_code == 400
    assert response.headers["X-Regate-Reason"] == "path_not_canonical"
    assert "another path than its target" in response.get_json()["error"]["message"]
