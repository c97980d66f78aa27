"""End-to-end fixtures: everything real on loopback.

A JWKS identity provider and an OpenAI-compatible upstream stand in for what
cannot exist here; OPA (loaded with the compiled bundle), the enforcer under
gunicorn's gevent worker, and the store are the real components.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from regate import compiler
from regate.compiler.render import MASK_DECISION
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
    # With its decision log on and masked, as deploy/ runs it: the enforcer's access log names OPA's decision ids.
    server = OpaServer(opa_bin, bundle=str(example_bundle), extra_args=(
        "--set", "decision_logs.console=true", "--set", f"decision_logs.mask_decision={MASK_DECISION}")).start()
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


@contextlib.contextmanager
def config_stack(opa_bin: str, config: Path, env: dict[str, str], work: Path,
                 database_url: str | None = None, workers: int = 1) -> Iterator[Client]:
    """A config's own compiled bundle, OPA and enforcer (in `work`); yields a Client on the enforcer."""
    bundle = compiler.bundle.write(compiler.bundle_files(compiler.load_config(config)), work / "bundle.tar.gz")
    with OpaServer(opa_bin, bundle=str(bundle)) as opa:
        with EnforcerProcess(config, env=env, opa_url=opa.url, data_dir=work / "data",
                             database_url=database_url, workers=workers) as proc:
            client = Client(proc.url)
            try:
                yield client
            finally:
                client.close()


@pytest.fixture
def admin_token(idp):
    return idp.mint({"scope": "openid litellm_proxy_admin", "sub": "admin-1", "email": "admin@example.com"})


def team_token(idp, team: str = "team-a", user: str = "u1", email: str | None = None, **claims) -> str:
    return idp.mint({"team_id": team, "sub": user, "email": email or f"{user}@example.com", **claims})


def chat_body(model: str = "gpt-4o-mini", content: str = "hello there", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


# -- replicas on a shared PostgreSQL (state tests) -------------------------------------------
from tests.support.postgres import postgres_cluster  # noqa: E402,F401 - session fixture for these tests


class Replica:
    """One enforcer pod: `regate serve` (gunicorn) beside its own OPA sidecar, on a shared database."""

    def __init__(self, name: str, *, opa_bin: str, bundle: Path, env: dict[str, str], database_url: str,
                 data_dir: Path, workers: int = 1):
        self.name = name
        self.opa = OpaServer(opa_bin, bundle=str(bundle))
        self.enforcer = EnforcerProcess(EXAMPLE, env=env, opa_url=self.opa.url, database_url=database_url,
                                        data_dir=data_dir, workers=workers)
        self.client = Client(self.enforcer.url)

    @property
    def url(self) -> str:
        return self.enforcer.url

    def start(self) -> "Replica":
        self.opa.start()
        self.enforcer.start()
        return self

    def restart_enforcer(self) -> None:
        """Stop gracefully and start again on the same port (and the same spool directory)."""
        self.client.close()
        self.enforcer.stop()
        self.enforcer.start()

    def stop(self) -> None:
        self.client.close()
        try:
            self.enforcer.stop()
        finally:
            self.opa.stop()


@pytest.fixture
def pg_database(postgres_cluster) -> str:  # noqa: F811 - the fixture imported above
    """A fresh, empty database on the session's PostgreSQL cluster (postgresql:// URL)."""
    return postgres_cluster.create_database()


@pytest.fixture
def start_replicas(opa_bin, example_bundle, idp, upstream, pg_database, tmp_path):
    """start_replicas(n, workers=1, env=None) -> [Replica, ...], all on the test's fresh PostgreSQL database."""
    started: list[Replica] = []

    def _start(count: int, *, workers: int = 1, env: dict[str, str] | None = None) -> list[Replica]:
        replicas = []
        for _ in range(count):
            name = "ABCDEFGH"[len(started)]
            replica = Replica(name, opa_bin=opa_bin, bundle=example_bundle, env={**enforcer_env(idp, upstream), **(env or {})},
                              database_url=pg_database, data_dir=tmp_path / f"replica-{name}", workers=workers)
            started.append(replica)
            replicas.append(replica.start())
        return replicas

    yield _start
    for replica in reversed(started):
        replica.stop()


def open_store(database_url: str):
    """A Store on the replicas' database, for reading what the enforcers wrote (close it after use)."""
    from regate.enforcer.store import Store

    return Store.from_url(database_url, default_sqlite_path="/nonexistent/unused.db", pool_size=2)


def metric(replica, name: str, **labels: str) -> float:
    """One sample of the replica's /metrics (summed over its workers); 0 when absent."""
    status, text, _ = replica.client.get("/metrics")
    assert status == 200
    return parse_metrics(text).get(sample_name(name, **labels), 0.0)


# -- shared by the flow, attack, outage, streaming and observability tests ---------------------
@pytest.fixture
def fresh_upstream(upstream):
    """The session's upstream stand-in with nothing recorded and default behaviour (before and after)."""
    from tests.support.mock_openai import Behavior

    def reset() -> None:
        upstream.clear()
        upstream.default = Behavior()
        upstream.by_model.clear()

    reset()
    yield upstream
    reset()


def assert_openai_error(body, status: int) -> str:
    """Assert regate's OpenAI error shape ({"error": {message, type, param, code}}); return the message."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["code"] == str(status), error
    assert isinstance(error["message"], str) and error["message"], error
    return error["message"]


def raw_request(url: str, method: str, target: str, *, headers: dict[str, str] | None = None,
                body: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes, dict[str, str]]:
    """One request whose target is sent byte for byte as given (http.client does not normalise it,
    unlike urllib3/requests); answers (status, body, lower-cased headers)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in {**(headers or {}), "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


class SseStream:
    """A streaming chat completion on its own connection; http.client's read1 returns what has
    arrived, so a test sees each chunk when the enforcer relays it."""

    def __init__(self, base_url: str, token: str, body: dict, timeout: float = 10.0):
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        self.received = b""

    def read_events(self, count: int) -> list[bytes]:
        """Read until `count` complete SSE events have arrived in total; answers all received so far."""
        while self.received.count(b"\n\n") < count:
            data = self.response.read1(65536)
            if not data:
                raise AssertionError(f"stream ended after {self.received!r}")
            self.received += data
        return [e + b"\n\n" for e in self.received.split(b"\n\n") if e]

    def read_rest(self) -> bytes:
        self.received += self.response.read()
        return self.received

    def close(self) -> None:
        self.conn.close()


def leave_mid_stream(url: str, token: str, body: dict, left) -> str:
    """Open a stream, read its first event and go away, then set `left` (an Event the upstream waits
    for before the rest); answers the request's id."""
    stream = SseStream(url, token, body)
    request_id = stream.response.getheader("X-Request-ID")
    try:
        stream.read_events(1)
    finally:
        stream.close()  # the client goes away mid-stream
        left.set()
    return request_id


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {sample with sorted labels: value}, as `metric()` spells sample names."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            sample, _, value = line.rpartition(" ")
            samples[sample] = samples.get(sample, 0.0) + float(value)
    return samples


def sample_name(name: str, **labels: str) -> str:
    return name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")


# -- Redis (shared rate limits) ----------------------------------------------------------------
from tests.support.redis import redis_server, redis_url  # noqa: E402,F401 - fixtures for these tests
