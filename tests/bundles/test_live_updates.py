"""Live policy updates: a real OPA polls `regate bundle serve`; recompiling a changed config
swaps the policy in OPA without a restart, while a steady stream of requests sees no error."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from tests.e2e.conftest import Client, chat_body, enforcer_env, team_token
from tests.support.enforcer import ROOT, EnforcerProcess
from tests.support.idp import IdentityProvider
from tests.support.mock_openai import MockOpenAI
from tests.support.net import free_port, wait_for_http
from tests.support.opa import OpaServer

CONFIG = (ROOT / "examples" / "regate.yaml").read_text()
V1 = CONFIG.replace("team_allowed_routes: [openai_routes, info_routes, /spend/logs]",
                    "team_allowed_routes: [openai_routes, info_routes]")
assert V1 != CONFIG
V2 = CONFIG  # adds /spend/logs for teams


@pytest.fixture
def bundle_server(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(V1)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "regate.cli", "bundle", "serve", "--config", str(config),
                             "--host", "127.0.0.1", "--port", str(port), "--poll-interval", "0.2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=30)
        yield config, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def opa_config(tmp_path, bundle_url: str):
    path = tmp_path / "opa-config.json"
    path.write_text(json.dumps({
        "services": {"regate": {"url": bundle_url}},
        "bundles": {"regate": {"service": "regate", "resource": "bundles/regate.tar.gz",
                               "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2,
                                           "long_polling_timeout_seconds": 10}}},
    }))
    return str(path)


def test_recompiled_config_reaches_opa_without_errors(opa_bin, bundle_server, tmp_path):
    config, bundle_url = bundle_server
    with IdentityProvider() as idp, MockOpenAI(api_key="k") as upstream, \
            OpaServer(opa_bin, config_file=opa_config(tmp_path, bundle_url)) as opa:
        env = enforcer_env(idp, upstream) | {"OPENAI_API_KEY": "k", "AZURE_API_KEY": "k"}
        with EnforcerProcess(config, env=env, opa_url=opa.url, data_dir=tmp_path / "data") as enforcer:
            client = Client(enforcer.url)
            token = team_token(idp)
            assert client.get("/spend/logs", token=token)[0] == 403  # revision 1: teams may not read spend

            statuses: list[int] = []
            stop = threading.Event()

            def steady_stream():
                c = Client(enforcer.url)
                while not stop.is_set():
                    statuses.append(c.post("/v1/chat/completions", chat_body(), token=token)[0])
                c.close()

            stream = threading.Thread(target=steady_stream)
            stream.start()
            try:
                time.sleep(0.5)
                config.write_text(V2)
                changed_at = time.monotonic()
                while client.get("/spend/logs", token=token)[0] != 200:
                    assert time.monotonic() - changed_at < 10, "revision 2 did not reach OPA"
                    time.sleep(0.05)
                swap_seconds = time.monotonic() - changed_at
                time.sleep(0.5)
            finally:
                stop.set()
                stream.join()
            client.close()
    assert len(statuses) > 20
    assert set(statuses) == {200}, f"errors during the swap: {sorted(set(statuses))}"
    # Long polling: the new revision arrives about as soon as it is compiled, well inside
    # the 2 s polling interval (plus 1 s for the file check and the compile).
    assert swap_seconds < 3


def test_opa_verifies_signed_bundles_from_the_service(opa_bin, tmp_path):
    from tests.bundles.test_signing import write_keypair

    private, public = write_keypair(tmp_path, "RS256")
    config = tmp_path / "config.yaml"
    config.write_text(V1)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "regate.cli", "bundle", "serve", "--config", str(config),
                             "--host", "127.0.0.1", "--port", str(port), "--signing-key", str(private),
                             "--key-id", "regate-ci"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=30)
        path = tmp_path / "opa.json"
        doc = json.loads(open(opa_config(tmp_path, f"http://127.0.0.1:{port}")).read())
        doc["keys"] = {"regate-ci": {"algorithm": "RS256", "key": public.read_text()}}
        doc["bundles"]["regate"]["signing"] = {"keyid": "regate-ci"}
        path.write_text(json.dumps(doc))
        with OpaServer(opa_bin, config_file=str(path)) as opa:
            decision = opa.decide({"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "none"}})
            assert decision["status"] == 401
    finally:
        proc.terminate()
        proc.wait(timeout=15)
