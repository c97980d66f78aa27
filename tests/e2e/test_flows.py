"""The flows of LiteLLM's JWT-auth docs, end to end: real OPA with the compiled bundle, the IdP
stand-in's JWKS, the OpenAI stand-in, and `regate serve` under gunicorn.

Two configs: examples/regate.yaml (the module's `enforcer` fixture), and a second one built from
the docs' "Custom JWT Field", "Allowed Routes" and "Set Accepted JWT Scope Names" settings (its
own OPA and enforcer, `docs_stack`).
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from tests.support.forge import OMIT
from tests.support.mock_openai import Behavior

from .conftest import UPSTREAM_KEY, assert_openai_error, chat_body, config_stack, enforcer_env, metric, team_token

# What the upstream may see: the headers regate builds, plus the W3C trace context it forwards.
UPSTREAM_HEADER_NAMES = {"host", "content-type", "content-length", "accept", "accept-encoding", "user-agent",
                         "authorization", "x-request-id", "traceparent"}


def reason(headers) -> str | None:
    return headers.get("X-Regate-Reason")


# -- admin and team tokens on examples/regate.yaml ------------------------------------------------
def test_admin_scope_may_generate_a_key(client, admin_token, fresh_upstream):
    status, body, _ = client.post("/key/generate", {"user_id": "flow-key-owner", "key_alias": "flows"},
                                  token=admin_token)
    assert status == 200, body
    assert body["key"].startswith("sk-") and body["user_id"] == "flow-key-owner"
    assert fresh_upstream.requests == []


def test_team_chat_completion_reaches_the_upstream_with_only_regates_headers(client, idp, fresh_upstream):
    token = team_token(idp, team="team-flows", user="flows-u1")
    request = chat_body(content="what is a policy", temperature=0.2, user="end-user-7")
    client_headers = {
        "Cookie": "session=client-cookie-value",
        "Connection": "keep-alive, X-Hop-Secret",  # names a hop-by-hop header of its own
        "Keep-Alive": "timeout=5",
        "X-Hop-Secret": "hop-value",
        "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
        "TE": "trailers",
        "x-api-key": "sk-client-side-api-key",
        "OpenAI-Organization": "org-client-chosen",
        "X-Request-ID": "client-chosen-id",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    status, body, headers = client.post("/v1/chat/completions", request, token=token, headers=client_headers)
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["usage"]["prompt_tokens"] == 4

    [received] = fresh_upstream.requests
    assert received.method == "POST" and received.path == "/v1/chat/completions" and received.query == {}
    assert received.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert received.body == request  # forwarded unchanged; model gpt-4o-mini is also the upstream's name
    assert received.header_names == UPSTREAM_HEADER_NAMES, received.headers
    assert received.headers["traceparent"] == client_headers["traceparent"]
    # regate's own request id, the one the client got back; not the client's
    assert received.headers["x-request-id"] == headers["X-Request-ID"] != "client-chosen-id"
    sent = json.dumps(received.headers) + received.raw_body.decode()
    for secret in (token, "client-cookie-value", "hop-value", "cHJveHk6c2VjcmV0", "sk-client-side-api-key",
                   "org-client-chosen"):
        assert secret not in sent
    # the upstream's cookies and identifying headers do not come back to the client
    assert "Set-Cookie" not in headers and "openai-organization" not in {k.lower() for k in headers}


def test_team_token_may_not_generate_a_key(client, idp, fresh_upstream):
    status, body, headers = client.post("/key/generate", {"team_id": "team-a"}, token=team_token(idp))
    assert status == 403, body
    message = assert_openai_error(body, 403)
    assert body["error"]["type"] == "auth_error"
    assert reason(headers) == "route_not_allowed"
    assert message == "role team may not call /key/generate"
    assert fresh_upstream.requests == []


@pytest.mark.parametrize(
    ("who", "method", "path", "expected"),
    [
        # admin_allowed_routes: management, spend, global spend, info (not the LLM routes)
        ("admin", "GET", "/global/spend", 200),
        ("admin", "GET", "/spend/logs", 200),
        ("admin", "GET", "/v1/models", 200),
        ("admin", "POST", "/v1/chat/completions", 403),
        ("admin", "POST", "/v1/embeddings", 403),
        # team_allowed_routes: openai, info, /spend/logs
        ("team", "GET", "/v1/models", 200),
        ("team", "GET", "/spend/logs", 200),
        ("team", "GET", "/global/spend", 403),
        ("team", "POST", "/team/new", 403),
        ("team", "POST", "/team/block", 403),
        ("team", "POST", "/user/new", 403),
        # user_allowed_routes (a token with a user id and no team): openai, info
        ("user", "POST", "/v1/chat/completions", 200),
        ("user", "GET", "/v1/models", 200),
        ("user", "GET", "/spend/logs", 403),
        ("user", "POST", "/key/generate", 403),
    ],
)
def test_allowed_routes_per_role(client, idp, admin_token, fresh_upstream, who, method, path, expected):
    token = {"admin": admin_token, "team": team_token(idp, team="team-routes"),
             "user": idp.mint({"sub": "solo-user", "email": "solo@example.com"})}[who]
    status, body, headers = client.request(method, path, token=token,
                                           json_body=chat_body() if method == "POST" else None)
    assert status == expected, body
    if expected == 403:
        assert_openai_error(body, 403)
        assert reason(headers) == "route_not_allowed"
    reached = [r.path for r in fresh_upstream.requests]
    assert reached == (["/v1/chat/completions"] if expected == 200 and path == "/v1/chat/completions" else [])


def test_token_without_any_role_is_403_no_role(client, idp, fresh_upstream):
    token = idp.mint({"sub": OMIT, "email": OMIT})
    status, body, headers = client.post("/v1/chat/completions", chat_body(), token=token)
    assert status == 403 and reason(headers) == "no_role", body
    assert_openai_error(body, 403)
    assert fresh_upstream.requests == []


def test_first_request_of_a_new_user_creates_it(client, idp, admin_token):
    """user_id_upsert: true — the user record exists after the first allowed request."""
    user = f"upsert-{time.monotonic_ns()}"
    assert client.get(f"/user/info?user_id={user}", token=admin_token)[0] == 404
    status, body, _ = client.get("/v1/models", token=team_token(idp, team="team-upsert", user=user))
    assert status == 200, body
    status, body, _ = client.get(f"/user/info?user_id={user}", token=admin_token)
    assert status == 200, body
    assert body["user_id"] == user and body["user_info"]["user_email"] == f"{user}@example.com"


# -- email domains (user_allowed_email_domain: [example.com, corp.example.com]) ---------------------
@pytest.mark.parametrize(
    ("email", "extra", "allowed"),
    [
        ("alice@example.com", {}, True),
        ("alice@corp.example.com", {}, True),
        ("Alice@CORP.Example.COM", {}, True),  # domains compare case-insensitively
        ("alice@example.com", {"email_verified": True}, True),
        ("alice@example.com", {"email_verified": False}, False),
        ("alice@example.com", {"email_verified": "false"}, False),
        ("alice@example.com", {"email_verified": 0}, False),
        ("alice@example.org", {}, False),
        ("alice@sub.example.com", {}, False),  # exact domain, not a suffix
        ("alice@notexample.com", {}, False),
        ("a@b@example.com", {}, False),  # exactly one "@"
        ("@example.com", {}, False),
        ("alice@example.com.evil.test", {}, False),
        (None, {}, False),  # no email claim at all
    ],
)
def test_email_domain_access(client, idp, fresh_upstream, email, extra, allowed):
    claims = {"team_id": "team-mail", "sub": "mail-user", "email": email if email is not None else OMIT, **extra}
    status, body, headers = client.post("/v1/chat/completions", chat_body(), token=idp.mint(claims))
    if allowed:
        assert status == 200, body
        assert len(fresh_upstream.requests) == 1
    else:
        assert status == 403 and reason(headers) == "email_domain_not_allowed", body
        assert_openai_error(body, 403)
        assert fresh_upstream.requests == []


def test_email_domain_does_not_apply_to_admins(client, idp):
    token = idp.mint({"scope": "litellm_proxy_admin", "sub": "outside-admin", "email": "ops@elsewhere.org"})
    status, body, _ = client.get("/global/spend", token=token)
    assert status == 200, body


# -- model routing ---------------------------------------------------------------------------
def test_azure_deployment_routing(client, idp, fresh_upstream):
    request = chat_body(model="azure-gpt-4o", content="route me to azure")
    status, body, _ = client.post("/v1/chat/completions", request, token=team_token(idp))
    assert status == 200, body
    [received] = fresh_upstream.requests
    assert received.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert received.query == {"api-version": ["2024-10-21"]}
    assert received.headers["api-key"] == UPSTREAM_KEY
    assert "authorization" not in received.headers
    assert "model" not in received.body  # the deployment in the path chooses the model
    assert received.body["messages"] == request["messages"]


def test_team_models_limit_the_teams_tokens(client, idp, admin_token, fresh_upstream):
    """As in LiteLLM: a team created with `models` may call only those, with its JWTs too."""
    status, body, _ = client.post("/team/new", {"team_id": "team-limited", "models": ["gpt-4o-mini"]},
                                  token=admin_token)
    assert status == 200, body
    token = team_token(idp, team="team-limited", user="limited-u1")
    assert client.post("/v1/chat/completions", chat_body(), token=token)[0] == 200
    status, body, headers = client.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=token)
    assert status == 403 and reason(headers) == "model_not_allowed", body
    assert "team-limited may not use model azure-gpt-4o" in assert_openai_error(body, 403)
    assert [r.body.get("model") for r in fresh_upstream.requests] == ["gpt-4o-mini"]
    # Another team's tokens are not limited by it.
    assert client.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=team_token(idp))[0] == 200


def test_team_update_changes_what_the_teams_tokens_may_call(client, idp, admin_token, fresh_upstream):
    status, body, _ = client.post("/team/new", {"team_id": "team-updated", "team_alias": "Before"},
                                  token=admin_token)
    assert status == 200 and body["models"] == [], body
    token = team_token(idp, team="team-updated", user="updated-u1")
    assert client.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=token)[0] == 200

    status, body, _ = client.post("/team/update", {"team_id": "team-updated", "models": ["gpt-4o-mini"]},
                                  token=admin_token)
    assert status == 200, body
    assert (body["team_alias"], body["models"]) == ("Before", ["gpt-4o-mini"])  # left-out fields stay
    status, body, headers = client.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=token)
    assert status == 403 and reason(headers) == "model_not_allowed", body
    assert client.post("/v1/chat/completions", chat_body(), token=token)[0] == 200

    status, body, _ = client.post("/team/update", {"team_id": "team-updated", "models": []}, token=admin_token)
    assert status == 200 and body["models"] == [], body  # an empty list: every model again
    assert client.post("/v1/chat/completions", chat_body(model="azure-gpt-4o"), token=token)[0] == 200
    status, body, _ = client.get("/team/info?team_id=team-updated", token=admin_token)
    assert body["team_info"]["models"] == [] and body["team_info"]["team_alias"] == "Before"


@pytest.mark.parametrize("request_body, status, message", [
    ({"models": ["gpt-4o-mini"]}, 400, "missing field 'team_id'"),
    ({"team_id": "team-x", "models": "gpt-4o-mini"}, 400, "field 'models' has the wrong type"),
    ({"team_id": "team-x", "models": [""]}, 400, "field 'models' must be a list of non-empty strings"),
    ({"team_id": "team-x", "blocked": True}, 400, "unsupported field 'blocked'"),
    ({"team_id": "no-such-team", "models": []}, 404, "team no-such-team does not exist (create it with /team/new)"),
])
def test_team_update_refusals_say_what_is_wrong(client, admin_token, request_body, status, message):
    got_status, body, _ = client.post("/team/update", request_body, token=admin_token)
    assert got_status == status, body
    assert message in assert_openai_error(body, status)


def test_models_lists_the_configured_names(client, idp, fresh_upstream):
    status, body, _ = client.get("/v1/models", token=team_token(idp))
    assert status == 200, body
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["azure-gpt-4o", "gpt-4o-mini"]
    assert fresh_upstream.requests == []  # answered from the config, not the upstream


def test_embeddings_are_proxied(client, idp, fresh_upstream):
    status, body, _ = client.post("/v1/embeddings", {"model": "gpt-4o-mini", "input": ["one two", "three"]},
                                  token=team_token(idp))
    assert status == 200, body
    assert [d["index"] for d in body["data"]] == [0, 1] and body["usage"]["prompt_tokens"] == 3
    [received] = fresh_upstream.requests
    assert received.path == "/v1/embeddings" and received.body["input"] == ["one two", "three"]
    assert received.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_unknown_model_is_400_and_not_forwarded(client, idp, fresh_upstream):
    status, body, headers = client.post("/v1/chat/completions", chat_body(model="gpt-9-imaginary"),
                                        token=team_token(idp))
    assert status == 400, body
    message = assert_openai_error(body, 400)
    assert "gpt-9-imaginary" in message and body["error"]["type"] == "invalid_request_error"
    assert fresh_upstream.requests == []


def test_a_block_overrides_cached_decisions_at_once(client, idp, admin_token, fresh_upstream):
    """Repeated requests are answered from the decision cache, yet a block (or unblock) through
    this enforcer applies to the very next request: the cache is keyed by the state generation."""
    token = team_token(idp, "cache-team", "cache-user")
    enforcer = SimpleNamespace(client=client)
    hits = metric(enforcer, "regate_decision_cache_total", result="hit")
    for _ in range(4):  # the first creates the user (never cached), the second knows it exists
        assert client.get("/v1/models", token=token)[0] == 200
    assert metric(enforcer, "regate_decision_cache_total", result="hit") >= hits + 2
    for path, expected in (("/team/block", 403), ("/team/unblock", 200)):
        status, body, _ = client.post(path, {"team_id": "cache-team"}, token=admin_token)
        assert status == 200, body
        status, body, headers = client.get("/v1/models", token=token)
        assert status == expected, body
        assert reason(headers) == ("team_blocked" if expected == 403 else None)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413_and_not_forwarded(client, idp, fresh_upstream, chunked):
    """10 MiB is the limit; without a Content-Length Werkzeug cuts the body off there, and the
    enforcer must still refuse it rather than read a truncated body as malformed JSON."""
    piece = b"a" * (1 << 20)
    parts = [b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'] + [piece] * 11 + [b'"}]}']
    headers = {"Authorization": f"Bearer {team_token(idp)}", "Content-Type": "application/json"}
    body = iter(parts) if chunked else b"".join(parts)
    resp = client.http.urlopen("POST", client.base_url + "/v1/chat/completions", body=body, chunked=chunked,
                               headers=headers)
    assert resp.status == 413, resp.data[:200]
    assert_openai_error(json.loads(resp.data), 413)
    assert fresh_upstream.requests == []


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_upstream_error_passes_through(client, idp, fresh_upstream, status):
    fresh_upstream.push(Behavior.fail(status, f"upstream says {status}", type="upstream_kind", code="some_code",
                                      extra_headers={"retry-after": "7"}))
    got, body, headers = client.post("/v1/chat/completions", chat_body(), token=team_token(idp))
    assert got == status
    assert body == {"error": {"message": f"upstream says {status}", "type": "upstream_kind", "param": None,
                              "code": "some_code"}}
    assert headers["Retry-After"] == "7"
    assert len(fresh_upstream.requests) == 1


def test_upstream_rejecting_regates_key_is_502_without_the_key(client, idp, fresh_upstream):
    fresh_upstream.push(Behavior.fail(401, f"Incorrect API key provided: {UPSTREAM_KEY}", code="invalid_api_key"))
    status, body, _ = client.post("/v1/chat/completions", chat_body(), token=team_token(idp))
    assert status == 502, body
    message = assert_openai_error(body, 502)
    assert "rejected regate's credentials" in message and UPSTREAM_KEY not in json.dumps(body)


# -- a second config: the docs' custom team field and allowed routes ---------------------------
DOCS_CONFIG = """\
# LiteLLM JWT docs: "Custom JWT Field", "Allowed Routes" (admin and team) and
# "Set Accepted JWT Scope Names", with a model list on the test upstream.
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: os.environ/OPENAI_API_BASE
      api_key: os.environ/OPENAI_API_KEY
  - model_name: gpt-4o-mini-1s
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: os.environ/OPENAI_API_BASE
      api_key: os.environ/OPENAI_API_KEY
      timeout: 1
      stream_timeout: 1

general_settings:
  master_key: sk-1234
  enable_jwt_auth: True
  litellm_jwtauth:
    admin_jwt_scope: "litellm-proxy-admin"
    admin_allowed_routes: ["/v1/embeddings"]
    team_id_jwt_field: "client_id"
    team_allowed_routes: ["/v1/chat/completions"]
"""


@pytest.fixture(scope="module")
def docs_stack(opa_bin, idp, upstream, tmp_path_factory):
    """Its own compiled bundle, OPA and enforcer; yields a Client on that enforcer."""
    work = tmp_path_factory.mktemp("docs-stack")
    config = work / "docs.yaml"
    config.write_text(DOCS_CONFIG)
    with config_stack(opa_bin, config, enforcer_env(idp, upstream), work) as docs_client:
        yield docs_client


def test_custom_team_field(docs_stack, idp, fresh_upstream):
    token = idp.mint({"client_id": "team-from-client-id"})
    status, body, _ = docs_stack.post("/v1/chat/completions", chat_body(), token=token)
    assert status == 200, body
    [received] = fresh_upstream.requests
    assert received.path == "/v1/chat/completions" and received.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"

    # `team_id` is not this config's team field: no team, no user field configured -> no role
    status, body, headers = docs_stack.post("/v1/chat/completions", chat_body(), token=idp.mint({"team_id": "t"}))
    assert status == 403 and reason(headers) == "no_role", body
    assert len(fresh_upstream.requests) == 1


@pytest.mark.parametrize(
    ("who", "method", "path", "expected"),
    [
        ("team", "POST", "/v1/chat/completions", 200),
        ("team", "GET", "/v1/models", 403),  # team_allowed_routes names only chat completions
        ("team", "POST", "/v1/embeddings", 403),
        ("admin", "POST", "/v1/embeddings", 200),  # admin_allowed_routes: ["/v1/embeddings"]
        ("admin", "POST", "/key/generate", 403),
        ("admin", "POST", "/v1/chat/completions", 403),
        ("default_scope", "POST", "/v1/embeddings", 403),  # litellm_proxy_admin is not this config's scope
        ("master_key", "POST", "/key/generate", 200),  # the master key may call every route
    ],
)
def test_docs_allowed_routes(docs_stack, idp, fresh_upstream, who, method, path, expected):
    token = {"team": idp.mint({"client_id": "docs-team"}),
             "admin": idp.mint({"scope": "openid litellm-proxy-admin"}),
             "default_scope": idp.mint({"scope": "litellm_proxy_admin"}),
             "master_key": "sk-1234"}[who]
    payload = None
    if method == "POST":
        payload = ({"model": "gpt-4o-mini", "input": "a b"} if path == "/v1/embeddings"
                   else {"user_id": "docs-key-owner"} if path == "/key/generate" else chat_body())
    status, body, headers = docs_stack.request(method, path, token=token, json_body=payload)
    assert status == expected, body
    if expected == 403:
        assert_openai_error(body, 403)
        assert reason(headers) in ("route_not_allowed", "no_role")
        assert fresh_upstream.requests == []


def test_upstream_timeout_is_504_not_a_hang(docs_stack, idp, fresh_upstream):
    """gpt-4o-mini-1s has `timeout: 1`; the upstream waits 5 s before its status line."""
    fresh_upstream.push(Behavior(headers_delay=5))
    token = idp.mint({"client_id": "docs-team"})
    started = time.monotonic()
    status, body, headers = docs_stack.post("/v1/chat/completions", chat_body(model="gpt-4o-mini-1s"), token=token)
    elapsed = time.monotonic() - started
    assert status == 504, body
    assert_openai_error(body, 504)
    assert reason(headers) == "upstream_timeout"
    assert elapsed < 4, f"answered after {elapsed:.1f}s: the 1 s bound did not hold"


def test_stalled_stream_ends_with_a_timeout_event(docs_stack, idp, fresh_upstream):
    """`stream_timeout: 1`: a stream that stops sending ends with an SSE error event, not a hang."""
    import threading

    hold = threading.Event()  # never set: the upstream stalls after its first chunk
    fresh_upstream.push(Behavior(hold=hold))
    token = idp.mint({"client_id": "docs-team"})
    try:
        status, body, _ = docs_stack.post("/v1/chat/completions", chat_body(model="gpt-4o-mini-1s", stream=True),
                                          token=token)
    finally:
        hold.set()
    assert status == 200
    events = [e for e in body.split("\n\n") if e]
    assert events[0].startswith("data: {") and '"chat.completion.chunk"' in events[0]
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "504" and "sent nothing for 1s" in last["error"]["message"], last


def test_a_stream_left_early_whose_upstream_stalls_is_billed_an_estimate(docs_stack, idp, fresh_upstream):
    """`stream_timeout: 1`: after the client left, regate waits that long for the usage, then records
    an estimate (marked as one) rather than nothing: the prompt counted locally, one token per event."""
    import threading

    from regate.enforcer import usage_estimate

    from .conftest import SseStream

    team = f"docs-leaver-{time.monotonic_ns()}"
    left, stall = threading.Event(), threading.Event()
    fresh_upstream.push(Behavior(holds={1: left, 11: stall}))  # 1 event, then 10 after the client left, then none
    request = chat_body(model="gpt-4o-mini-1s", content="an estimate of these tokens", stream=True, max_tokens=50)
    stream = SseStream(docs_stack.base_url, idp.mint({"client_id": team}), request)
    request_id = stream.response.getheader("X-Request-ID")
    try:
        stream.read_events(1)
        stream.close()
        left.set()
        deadline = time.monotonic() + 15
        while not (rows := docs_stack.get(f"/spend/logs?team_id={team}", token="sk-1234")[1]):
            assert time.monotonic() < deadline, "no spend row"
            time.sleep(0.1)
    finally:
        left.set()
        stall.set()
    [row] = rows
    assert row["request_id"] == request_id
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage_estimate.prompt_tokens("chat", request), 11)
    assert (row["status"], row["usage_estimated"]) == ("incomplete", True)
