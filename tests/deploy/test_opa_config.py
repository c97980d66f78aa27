"""The OPA configs and OPA command lines of compose and Kubernetes, run by the real OPA.

A stand-in HTTP server serves the compiled examples/regate.yaml bundle (not regate's bundle
service): what is checked here is that OPA accepts each config, polls the configured resource,
long-polls, activates the bundle, answers decisions, and that the health checks and probes
the deployments declare report it. OPA runs as the OPA image's user (uid 1000, HOME and
working directory "/"), so it gets no writable place but the ones the deployments give it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.decision_log import decisions
from tests.support.net import free_port

from . import files
from .processes import Process, StaticBundleServer

MASTER_KEY_INPUT = {"request": {"method": "GET", "path": "/global/spend"}, "credential": {"type": "master_key"}}
NO_CREDENTIAL_INPUT = {"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "none"}}
# examples/regate.yaml names team_id and sub as id claims; the rest must not reach the decision log.
TOKEN_INPUT = {"request": {"method": "GET", "path": "/v1/models"},
               "credential": {"type": "jwt", "claims": {"team_id": "team-a", "sub": "u1", "email": "private@example.com",
                                                      "name": "Private Name", "nickname": "private-nick"}}}


def assert_decision_log_masked(output: str) -> None:
    """The OPA's decision log has the token decision, with the claims masked to the ids by the bundle's policy."""
    logged = [e for e in decisions(output.splitlines()).values()
              if e.get("input", {}).get("credential", {}).get("type") == "jwt"]
    assert logged, output
    for entry in logged:
        assert entry["input"]["credential"]["claims"] == {"team_id": "team-a", "sub": "u1"}
        assert entry["masked"] == ["/input/credential/claims"]
    assert "private" not in output.lower()


def decide(api_url: str, input_doc: dict) -> dict:
    req = urllib.request.Request(f"{api_url}/v1/data/regate/authz/decision", method="POST",
                                 data=json.dumps({"input": input_doc}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["result"]


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def manifest_revision(bundle: Path) -> str:
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.lstrip("/") == ".manifest")
        return json.loads(tar.extractfile(member).read())["revision"]


def prefer_wait(headers: dict) -> int | None:
    """The `wait=N` of a `Prefer` header (OPA sends e.g. `modes=snapshot,delta;wait=10`)."""
    match = re.search(r"(?:^|[;,\s])wait=(\d+)", headers.get("Prefer", ""))
    return int(match.group(1)) if match else None


def write_config(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


def opa_user() -> dict:
    """Popen arguments that run OPA as its image's user (when we are root; else we are unprivileged)."""
    sidecar = files.pod_containers(files.k8s_object("Deployment", "regate-enforcer"))["opa"]
    uid, gid = sidecar["securityContext"]["runAsUser"], sidecar["securityContext"]["runAsGroup"]
    assert (uid, gid) == (1000, 1000), "openpolicyagent/opa images run as 1000:1000"
    if os.geteuid() != 0:
        return {}
    return dict(user=uid, group=gid, extra_groups=[], env={"HOME": "/", "PATH": "/usr/bin:/bin"}, cwd="/")


def start_opa(argv: list[str]) -> Process:
    return Process(argv, **opa_user())


def run_as_opa(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, **opa_user())


@pytest.fixture(scope="module")
def opa_bin(opa_bin):
    """The OPA binary copied where OPA's user may execute it (the checkout may be root-only)."""
    directory = Path(tempfile.mkdtemp(prefix="regate-opa-bin-"))
    directory.chmod(0o755)
    copy = directory / "opa"
    shutil.copy2(opa_bin, copy)
    copy.chmod(0o755)
    yield str(copy)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def shared_dir():
    """A temp dir OPA's user may read (pytest's own tmp dir is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="regate-opa-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def opa_argv(opa_bin: str, args: list[str], *, api_port: int, config_file: Path, diag_port: int | None = None) -> list[str]:
    """A deployment's OPA arguments (the image's entrypoint is /opa) with only the listen
    addresses and the config file's path replaced."""
    args = files.replace_flag(args, "--addr", f"127.0.0.1:{api_port}")
    args = files.replace_flag(args, "--config-file", str(config_file))
    if diag_port is not None:
        args = files.replace_flag(args, "--diagnostic-addr", f"127.0.0.1:{diag_port}")
    return [opa_bin, *args]


def compose_healthcheck(opa_bin: str, api_port: int) -> list[str]:
    test = files.load_compose()["services"]["opa"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "/opa"]
    query = test[-1]
    assert "127.0.0.1:8181/health?bundles" in query
    return [opa_bin, *test[2:-1], query.replace("127.0.0.1:8181", f"127.0.0.1:{api_port}")]


@pytest.fixture
def bundle_server(example_bundle):
    with StaticBundleServer(example_bundle.read_bytes()) as server:
        yield server


def test_compose_opa_config_and_command_load_the_bundle(opa_bin, example_bundle, bundle_server, shared_dir):
    config = yaml.safe_load(files.OPA_CONFIG.read_text())
    config["services"]["regate"]["url"] = bundle_server.url
    config_file = write_config(config, shared_dir / "opa.yaml")
    port = free_port()
    command = files.load_compose()["services"]["opa"]["command"]
    opa = start_opa(opa_argv(opa_bin, command, api_port=port, config_file=config_file))
    api = f"http://127.0.0.1:{port}"
    try:
        opa.wait_http(f"{api}/health?bundles", timeout=30)
        assert os.stat(f"/proc/{opa.proc.pid}").st_uid == (1000 if os.geteuid() == 0 else os.geteuid())
        resource = "/" + config["bundles"]["regate"]["resource"]
        assert bundle_server.requests[0][0] == resource
        with urllib.request.urlopen(f"{api}/v1/data/system/bundles/regate/manifest/revision", timeout=5) as resp:
            status, body = resp.status, json.loads(resp.read())
        assert status == 200 and body["result"] == manifest_revision(example_bundle)
        assert decide(api, MASTER_KEY_INPUT)["allow"] is True
        denied = decide(api, NO_CREDENTIAL_INPUT)
        assert (denied["allow"], denied["status"], denied["reasons"]) == (False, 401, ["missing_credential"])
        assert decide(api, TOKEN_INPUT)["subject"]["email"] == "private@example.com"  # the answer is whole

        # The configured long polling is in effect: OPA asks the server to hold the request.
        wait = config["bundles"]["regate"]["polling"]["long_polling_timeout_seconds"]
        deadline = time.monotonic() + 15
        while not any(prefer_wait(h) == wait for _, h in bundle_server.requests):
            assert time.monotonic() < deadline, bundle_server.requests
            time.sleep(0.1)
        assert all(path == resource for path, _ in bundle_server.requests)

        result = run_as_opa(compose_healthcheck(opa_bin, port))
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        opa.stop()
    assert_decision_log_masked(opa.output)
    # The same check against a stopped OPA reports unhealthy.
    assert run_as_opa(compose_healthcheck(opa_bin, port)).returncode != 0


def test_compose_healthcheck_is_unhealthy_until_the_bundle_is_active(opa_bin, shared_dir):
    # OPA up, but its bundle service answers 404: /health?bundles is 500, the check fails.
    with StaticBundleServer(b"", resource="/elsewhere") as server:
        config = yaml.safe_load(files.OPA_CONFIG.read_text())
        config["services"]["regate"]["url"] = server.url
        port = free_port()
        command = files.load_compose()["services"]["opa"]["command"]
        opa = start_opa(opa_argv(opa_bin, command, api_port=port,
                                 config_file=write_config(config, shared_dir / "opa.yaml")))
        try:
            opa.wait_http(f"http://127.0.0.1:{port}/health")
            assert get_status(f"http://127.0.0.1:{port}/health?bundles") != 200
            assert run_as_opa(compose_healthcheck(opa_bin, port)).returncode != 0
        finally:
            opa.stop()


def test_kubernetes_sidecar_serves_probes_on_the_diagnostic_port_and_persists_the_bundle(
        opa_bin, example_bundle, shared_dir):
    deployment = files.k8s_object("Deployment", "regate-enforcer")
    sidecar = files.pod_containers(deployment)["opa"]
    config = yaml.safe_load(files.k8s_object("ConfigMap", "regate-opa-config")["data"]["config.yaml"])
    # The emptyDir: writable by the pod's users (fsGroup); here owned by OPA's user.
    persistence = shared_dir / "opa-data"
    persistence.mkdir()
    if os.geteuid() == 0:
        os.chown(persistence, 1000, 1000)
    config["persistence_directory"] = str(persistence)
    config_file = shared_dir / "opa.yaml"
    api_port, diag_port = free_port(), free_port()
    api, diag = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{diag_port}"
    argv = opa_argv(opa_bin, sidecar["args"], api_port=api_port, diag_port=diag_port, config_file=config_file)

    with StaticBundleServer(example_bundle.read_bytes()) as server:
        config["services"]["regate"]["url"] = server.url
        write_config(config, config_file)
        opa = start_opa(argv)
        try:
            opa.wait_http(f"{diag}{sidecar['startupProbe']['httpGet']['path']}", timeout=30)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert get_status(diag + sidecar[probe]["httpGet"]["path"]) == 200, probe
            # The diagnostic port serves health and metrics only: no policy data, no writes.
            assert get_status(f"{diag}/v1/data") == 404
            assert decide(api, MASTER_KEY_INPUT)["allow"] is True
            assert decide(api, TOKEN_INPUT)["role"] == "team"
            persisted = list(persistence.rglob("*.tar.gz"))
            assert persisted, "persist: true wrote the activated bundle"
        finally:
            opa.stop()
        assert_decision_log_masked(opa.output)

    # The bundle service is gone now; a restarted sidecar activates the persisted bundle.
    opa = start_opa(argv)
    try:
        opa.wait_http(f"{diag}/health?bundles", timeout=30)
        assert decide(api, MASTER_KEY_INPUT)["allow"] is True
        assert decide(api, NO_CREDENTIAL_INPUT)["status"] == 401
    finally:
        opa.stop()
