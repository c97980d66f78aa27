"""End-to-end fixtures: everything real on loopback.

A JWKS identity provider and an OpenAI-compatible upstream stand in for what
cannot exist here; OPA (loaded with the compiled bundle), the enforcer under
gunicorn's gevent worker, and the store are the real components.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import urllib3

import compiler
from tests.support.enforcer import EnforcerProcess
from tests.support.idp import IdentityProvider
from tests.support.mock_openai import MockOpenAI
from tests.support.opa import OpaServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "regate.yaml"
MASTER_KEY = "sk-e2e-master-key-0123456789"
UPSTREAM_KEY = "sk-upstream-secret-key-abcdef"


class Client:
    """A small HTTP client over one keep-alive pool; answers (status, json-or-text, headers)."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = urllib3.PoolManager(maxsize=50, retries=False, timeout=urllib3.Timeout(connect=5, read=30))

    def request(self, method: str, path: str, *, token: str | None = None, json_body=None, headers=None,
                body: bytes | None = None, preload: bool = True):
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        resp = self.http.request(method, self.base_url + path, body=body, headers=all_headers,
                                 preload_content=preload)
        if not preload:
            return resp
        try:
            data = json.loads(resp.data) if resp.data else None
        except ValueError:
            data = resp.data.decode("utf-8", "replace")
        return resp.status, data, resp.headers

    def close(self) -> None:
        """Drop the keep-alive connections (a graceful stop waits for idle ones)."""
        self.http.clear()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=None, **kw):
        return self.request("POST", path, json_body=json_body, **kw)


@pytest.fixture(scope="session")
def idp():
    with IdentityProvider() as provider:
        yield provider


@pytest.fixture(scope="session")
def upstream():
    with MockOpenAI(api_key=UPSTREAM_KEY) as mock:
        yield mock


@pytest.fixture(scope="session")
def example_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle.tar.gz"
    return compiler.bundle.write(compiler.bundle_files(compiler.load_config(EXAMPLE)), out)


def enforcer_env(idp, upstream) -> dict[str, str]:
    """The environment `regate serve` gets: JWT settings as in LiteLLM, upstream secrets by env."""
    return {
        "JWT_PUBLIC_KEY_URL": idp.jwks_url,
        "JWT_AUDIENCE": idp.audience,
        "JWT_ISSUER": idp.issuer,
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "OPENAI_API_BASE": upstream.openai_base,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "AZURE_API_BASE": upstream.url,
        "AZURE_API_KEY": UPSTREAM_KEY,
    }


@pytest.fixture(scope="module")
def opa(opa_bin, example_bundle):
    server = OpaServer(opa_bin, bundle=str(example_bundle)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def enforcer(idp, upstream, opa, tmp_path_factory):
    """One enforcer (SQLite store) beside the module's OPA sidecar."""
    proc = EnforcerProcess(EXAMPLE, env=enforcer_env(idp, upstream), opa_url=opa.url,
                           data_dir=tmp_path_factory.mktemp("enforcer"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def client(enforcer):
    c = Client(enforcer.url)
    yield c
    c.close()


@pytest.fixture
def admin_token(idp):
    return idp.mint({"scope": "openid litellm_proxy_admin", "sub": "admin-1", "email": "admin@example.com"})


def team_token(idp, team: str = "team-a", user: str = "u1", email: str | None = None, **claims) -> str:
    return idp.mint({"team_id": team, "sub": user, "email": email or f"{user}@example.com", **claims})


def chat_body(model: str = "gpt-4o-mini", content: str = "hello there", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}
