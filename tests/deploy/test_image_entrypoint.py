"""The enforcer image's ENTRYPOINT + CMD, and its HEALTHCHECK, run outside Docker.

The image's filesystem is reproduced from the Dockerfile (see image.py); the process gets the
image's ENV and the environment compose gives the enforcer (deploy/compose.yaml, interpolated
from a filled-in deploy/.env.example), with the service addresses pointing at real components:
an OPA loaded with the compiled examples/regate.yaml and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
from urllib.parse import urlsplit

import psycopg
import pytest
import urllib3

from tests.support.net import free_port
from tests.support.opa import OpaServer

from . import files
from .conftest import UPSTREAM_KEY

MASTER_KEY = "sk-deploy-master-key-0123456789"


def compose_environment(idp, upstream, opa_url: str, database_url: str) -> dict[str, str]:
    """The enforcer's `environment:` from compose.yaml, as `docker compose` would render it from a
    deploy/.env filled in for this test; the hosts `opa` and `postgres` become the test's servers."""
    dotenv = files.read_env_file()
    filled = {
        "POSTGRES_PASSWORD": "unused-here",
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "OPENAI_API_BASE": upstream.openai_base,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "AZURE_API_BASE": upstream.url,
        "AZURE_API_KEY": UPSTREAM_KEY,
        "JWT_PUBLIC_KEY_URL": idp.jwks_url,
        "JWT_AUDIENCE": idp.audience,
        "JWT_ISSUER": idp.issuer,
    }
    assert set(filled) <= set(dotenv), "every value filled in here is one deploy/.env.example asks for"
    compose = files.load_compose()["services"]["enforcer"]["environment"]
    env = {name: files.interpolate(value, {**dotenv, **filled}) for name, value in compose.items()}
    assert urlsplit(env["REGATE_OPA_URL"]).hostname == "opa"
    assert urlsplit(env["DATABASE_URL"]).hostname == "postgres"
    env["REGATE_OPA_URL"] = opa_url
    env["DATABASE_URL"] = database_url
    return env


@pytest.fixture(scope="module")
def opa(opa_bin, example_bundle):
    server = OpaServer(opa_bin, bundle=str(example_bundle)).start()
    yield server
    server.stop()


@pytest.fixture
def http():
    # No keep-alive: a graceful stop (what is tested) would otherwise wait for our idle connections.
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30),
                               headers={"Connection": "close"})
    yield pool
    pool.clear()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Connection": "close"}


def team_token(idp) -> str:
    return idp.mint({"team_id": "team-deploy", "sub": "deploy-user", "email": "deploy-user@example.com"})


def run_healthcheck(image, env: dict[str, str], port: int) -> subprocess.CompletedProcess:
    """The image's HEALTHCHECK command, aimed at the test's port instead of 4000."""
    command = list(image.spec.healthcheck)
    assert "127.0.0.1:4000/" in command[-1]
    command[-1] = command[-1].replace("127.0.0.1:4000/", f"127.0.0.1:{port}/")
    timeout = float(image.spec.healthcheck_options["timeout"].rstrip("s"))
    return image.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_image_modules_come_from_the_image_tree(image):
    # Guards the checks below: the code that runs is the copy the Dockerfile assembles, not the checkout.
    env = image.environ()
    probe = ("import json, regate, regate.compiler.resources as r, regate.enforcer, gunicorn; print(json.dumps("
             "[regate.__file__, r.__file__, regate.enforcer.__file__, str(r.schema_path('config.schema.json')), "
             "str(r.templates_dir() / 'authz.rego.j2')]))")
    result = image.run(["python", "-c", probe], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for path in json.loads(result.stdout):
        assert path.startswith(str(image.path("/opt/venv/lib"))) and os.path.isfile(path), path
    for name in ("compiler", "enforcer"):  # nothing but `regate` at the top level
        absent = image.run(["python", "-c", f"import {name}"], env=env, capture_output=True, text=True, timeout=30)
        assert absent.returncode != 0 and "ModuleNotFoundError" in absent.stderr, (name, absent.stderr)
    image.mount(files.EXAMPLE_CONFIG, "/etc/regate/check.yaml")  # the checkout may be closed to the image's user
    compiled = image.run(["regate", "compile", str(image.path("/etc/regate/check.yaml")), "-o",
                          str(image.path("/var/lib/regate/check.tar.gz"))], env=env, capture_output=True, text=True,
                         timeout=60)
    assert compiled.returncode == 0, compiled.stderr


def test_entrypoint_serves_decisions_and_the_healthcheck_reports_it(image, opa, idp, upstream, postgres_url, http):
    spec = image.spec
    config_path = files.flag_value(spec.cmd, "--config")
    image.mount(files.EXAMPLE_CONFIG, config_path)  # compose / Kubernetes mount the config here
    port = free_port()
    args = files.replace_flag(files.replace_flag(spec.cmd, "--host", "127.0.0.1"), "--port", str(port))
    env = image.environ(compose_environment(idp, upstream, opa.url, postgres_url))
    base = f"http://127.0.0.1:{port}"

    enforcer = image.start(spec.entrypoint + args, env)
    try:
        enforcer.wait_http(f"{base}/health/readiness", timeout=60)
        uid = os.stat(f"/proc/{enforcer.proc.pid}").st_uid
        assert uid != 0 and uid == image.owner[0], "runs as the image's USER"
        readiness = http.request("GET", f"{base}/health/readiness")
        assert json.loads(readiness.data)["checks"] == {"opa": "ok", "store": "ok", "state": "ok"}
        k8s_enforcer = files.pod_containers(files.k8s_object("Deployment", "regate-enforcer"))["enforcer"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert http.request("GET", base + k8s_enforcer[probe]["httpGet"]["path"]).status == 200, probe

        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
        allowed = http.request("POST", f"{base}/v1/chat/completions", json=chat,
                               headers=bearer(team_token(idp)))
        assert allowed.status == 200, allowed.data
        assert json.loads(allowed.data)["object"] == "chat.completion"
        assert upstream.last_request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"

        denied = http.request("POST", f"{base}/key/generate", json={},
                              headers=bearer(team_token(idp)))
        assert denied.status == 403 and denied.headers["X-Regate-Reason"] == "route_not_allowed"
        anonymous = http.request("POST", f"{base}/v1/chat/completions", json=chat)
        assert anonymous.status == 401

        # The master key from the environment works, and the state lands in PostgreSQL.
        created = http.request("POST", f"{base}/team/new", json={"team_id": "deploy-team"},
                               headers=bearer(MASTER_KEY))
        assert created.status == 200, created.data
        with psycopg.connect(postgres_url) as conn:
            tables = {row[0] for row in conn.execute("select tablename from pg_tables where schemaname = 'public'")}
        assert tables, "the enforcer created its tables in DATABASE_URL's database"

        healthy = run_healthcheck(image, env, port)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        # `docker stop` sends SIGTERM: gunicorn drains and exits cleanly.
        status = enforcer.stop()
    assert status == 0, enforcer.output
    assert MASTER_KEY not in enforcer.output and UPSTREAM_KEY not in enforcer.output
    unhealthy = run_healthcheck(image, env, port)
    assert unhealthy.returncode != 0


def test_entrypoint_fails_fast_when_a_referenced_variable_is_missing(image, opa, idp, upstream, postgres_url):
    image.mount(files.EXAMPLE_CONFIG, files.flag_value(image.spec.cmd, "--config"))
    env = image.environ(compose_environment(idp, upstream, opa.url, postgres_url))
    del env["AZURE_API_KEY"]
    port = free_port()
    args = files.replace_flag(files.replace_flag(image.spec.cmd, "--host", "127.0.0.1"), "--port", str(port))
    result = image.run(image.spec.entrypoint + args, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "AZURE_API_KEY" in result.stderr and UPSTREAM_KEY not in result.stderr


def test_bundle_service_command_of_compose_and_kubernetes(image, opa_bin, example_bundle, tmp_path, http):
    """`bundle serve` from the same image: the compose command, its health check, and the bundle it serves."""
    compose = files.load_compose()["services"]["bundles"]
    k8s_args = files.pod_containers(files.k8s_object("Deployment", "regate-bundles"))["bundles"]["args"]
    for args in (compose["command"], k8s_args):
        image.mount(files.EXAMPLE_CONFIG, files.flag_value(args, "--config"))
    port = free_port()
    args = files.replace_flag(files.replace_flag(compose["command"], "--host", "127.0.0.1"), "--port", str(port))
    env = image.environ()
    service = image.start(image.spec.entrypoint + args, env)
    try:
        service.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        check = list(compose["healthcheck"]["test"][1:])
        assert "127.0.0.1:8282/" in check[-1]
        check[-1] = check[-1].replace("127.0.0.1:8282/", f"127.0.0.1:{port}/")
        result = image.run(check, env=env, capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stderr
        served = http.request("GET", f"http://127.0.0.1:{port}/bundles/regate.tar.gz")
        assert served.status == 200
        assert served.data == example_bundle.read_bytes(), "the service serves the compiled examples/regate.yaml"
    finally:
        assert service.stop() == 0, service.output
