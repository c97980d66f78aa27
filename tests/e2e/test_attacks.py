"""The attack suite, end to end: bad tokens, credential confusion and path tricks against the real
enforcer (gunicorn), its real OPA and the IdP's JWKS. Every attack is refused and nothing of it
reaches the model upstream: the stand-in must have received zero requests.
"""

from __future__ import annotations

import json
import threading

import pytest

from tests.support.forge import compact, forgeries, generate_key, sign
from tests.support.net import QuietHandler, ServerThread

from .conftest import MASTER_KEY, UPSTREAM_KEY, assert_openai_error, chat_body, raw_request, team_token

HEADER_FIELD_LIMIT = 16_384  # serve.py: limit_request_field_size (enforcer.http_server enforces it)


def reason(headers) -> str | None:
    return headers.get("X-Regate-Reason")


def expected_reason(token: str, verifier_code: str) -> str:
    """What the gate answers for a forged token: a credential that is not a key and does not have
    the JWT's three parts is refused before verification (malformed_credential); the rest get the
    verifier's code."""
    if verifier_code == "token_too_large":
        return verifier_code
    if not token.strip() or token.count(".") != 2:
        return "malformed_credential"
    return verifier_code


class KeyHost:
    """An attacker's server for `jku`/`x5u` URLs: serves a JWKS with its key and counts every request."""

    def __init__(self, jwk: dict):
        self.jwks = json.dumps({"keys": [jwk]}).encode()
        self.hits = 0
        self._lock = threading.Lock()
        host = self

        class Handler(QuietHandler):
            def do_GET(self):  # noqa: N802
                with host._lock:
                    host.hits += 1
                self.send_bytes(200, host.jwks)

        self._server = ServerThread(Handler)
        self.url = self._server.url

    def __enter__(self) -> "KeyHost":
        self._server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._server.close()


def test_forged_tokens_are_401_and_nothing_reaches_upstream(client, idp, fresh_upstream, enforcer):
    """Every token of tests.support.forge (structure, size, algorithms, key-naming headers, kids,
    signatures, time, audience, issuer) on a route that would reach the upstream.

    The 1 MB token is left to test_megabyte_token_is_refused_by_the_http_layer: it is larger than
    the server's header field limit, so the server answers it before the app runs.
    """
    forged = [f for f in forgeries(idp) if len(f.token) < HEADER_FIELD_LIMIT - 100]
    assert len(forged) >= 60
    wrong = []
    for forgery in forged:
        status, body, headers = client.post("/v1/chat/completions", chat_body(),
                                            headers={"Authorization": f"Bearer {forgery.token}"})
        want = expected_reason(forgery.token, forgery.code)
        if status != 401 or reason(headers) != want:
            wrong.append((forgery.name, status, reason(headers), want, body))
            continue
        assert_openai_error(body, 401)
        assert body["error"]["type"] == "auth_error"
        assert forgery.token not in json.dumps(body) or not forgery.token
    assert wrong == []
    assert fresh_upstream.requests == []
    for forgery in forged:  # no token is ever written to the log
        if len(forgery.token) > 20:
            assert forgery.token not in enforcer.output, forgery.name


def test_megabyte_token_is_refused_by_the_http_layer(client, idp, fresh_upstream):
    """Two layers refuse oversized tokens. A header above the server's 16 KiB field limit never
    reaches the app: enforcer.http_server answers 431 itself (no decision, so no reason header). A
    token above the enforcer's own 8 KiB limit but under the server's gets the app's 401 token_too_large, checked
    before any parsing."""
    token = idp.mint({"team_id": "team-a", "pad": "A" * (1 << 20)})
    status, _, headers = raw_request(client.base_url, "POST", "/v1/chat/completions",
                               headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                               body=json.dumps(chat_body()).encode())
    assert status == 431 and "x-regate-reason" not in headers, status

    nine_kib = idp.mint({"team_id": "team-a", "pad": "A" * 9 * 1024})
    assert 8192 < len(nine_kib) < HEADER_FIELD_LIMIT
    status, body, headers = client.post("/v1/chat/completions", chat_body(), token=nine_kib)
    assert status == 401 and reason(headers) == "token_too_large", body
    assert_openai_error(body, 401)
    assert fresh_upstream.requests == []


def test_keys_named_by_the_token_are_never_fetched(client, idp, fresh_upstream):
    """jku / x5u pointing at a server the attacker controls, which serves the attacker's key."""
    attacker = generate_key("RSA", kid="attacker-jku")
    claims = {**idp.default_claims(), "team_id": "team-a", "scope": "litellm_proxy_admin"}
    with KeyHost(attacker.public_jwk()) as host:
        tokens = {
            "jku": sign({"alg": "RS256", "kid": attacker.kid, "jku": host.url + "/jwks.json"}, claims,
                        attacker.private_key),
            "x5u": sign({"alg": "RS256", "kid": attacker.kid, "x5u": host.url + "/cert.pem"}, claims,
                        attacker.private_key),
            "jku_with_real_kid": sign({"alg": "RS256", "kid": idp.signing_key.kid, "jku": host.url + "/jwks.json"},
                                      claims, attacker.private_key),
            "jwk_embedded": sign({"alg": "RS256", "kid": attacker.kid, "jwk": attacker.public_jwk()}, claims,
                                 attacker.private_key),
        }
        for name, token in tokens.items():
            status, body, headers = client.post("/v1/chat/completions", chat_body(), token=token)
            assert status == 401, (name, body)
            assert reason(headers) in ("forbidden_header", "unknown_key", "bad_signature"), name
        assert host.hits == 0
    assert fresh_upstream.requests == []


def test_hostile_kids_signed_by_the_real_key(client, idp, fresh_upstream):
    """Only the kid is wrong (the signature is the IdP's own): path, SQL, URL, NUL and look-alike
    kids are unknown keys, and the flood costs the IdP at most one refetch (the unknown-kid cooldown)."""
    real = idp.key_of("RSA")
    claims = {**idp.default_claims(), "team_id": "team-a"}
    kids = ["../../../../etc/passwd", "..\\..\\windows\\win.ini", "/dev/stdin", "file:///etc/shadow",
            "x' OR '1'='1", "1; DROP TABLE keys; --", idp.jwks_url, "http://169.254.169.254/latest/meta-data/",
            real.kid + "\u0000", real.kid.upper(), real.kid + " ", " " + real.kid, "*", "%s%s%n", "{{7*7}}"]
    before = idp.fetch_count
    for kid in kids:
        token = sign({"alg": "RS256", "typ": "JWT", "kid": kid}, claims, real.private_key)
        status, body, headers = client.post("/v1/chat/completions", chat_body(), token=token)
        assert status == 401 and reason(headers) == "unknown_key", (kid, body)
    assert idp.fetch_count - before <= 1
    assert fresh_upstream.requests == []


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": 7},
        {"scope": {"litellm_proxy_admin": True}},
        {"scope": ["litellm_proxy_admin", 1]},
        {"scp": True},
        {"team_id": {"id": "team-a"}},
        {"team_id": ["team-a"]},
        {"team_id": 42},
        {"sub": 12345},
        {"email": ["a@example.com"]},
        {"org_id": {"nested": "org"}},
    ],
    ids=lambda c: json.dumps(c),
)
def test_claims_of_the_wrong_type_are_401(client, idp, fresh_upstream, claims):
    token = idp.mint({"team_id": "team-a", "sub": "u1", "email": "u1@example.com", **claims})
    status, body, headers = client.post("/v1/chat/completions", chat_body(), token=token)
    assert status == 401 and reason(headers) == "invalid_claims", body
    assert assert_openai_error(body, 401).startswith("malformed claims: ")
    assert fresh_upstream.requests == []


def test_credential_headers_and_schemes(client, idp, fresh_upstream):
    good = team_token(idp)
    rsa = idp.key_of("RSA")
    bad = sign({"alg": "HS256", "typ": "JWT", "kid": rsa.kid}, {**idp.default_claims(), "team_id": "team-a"},
               rsa.public_pem())
    expired = idp.mint({"team_id": "team-a", "exp": 1000}, now=0)
    cases = [
        # (headers, expected status, expected reason)
        ({}, 401, "missing_credential"),
        ({"Authorization": ""}, 401, "missing_credential"),
        ({"Authorization": "Bearer"}, 401, "malformed_credential"),
        ({"Authorization": "Bearer    "}, 401, "malformed_credential"),
        ({"Authorization": f"Basic {good}"}, 401, "malformed_credential"),
        ({"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, 401, "malformed_credential"),
        ({"Authorization": f"Token {good}"}, 401, "malformed_credential"),
        ({"Authorization": f"JWT {good}"}, 401, "malformed_credential"),
        ({"Authorization": good}, 401, "malformed_credential"),  # no scheme
        ({"Authorization": f"Bearer {good} {good}"}, 401, "malformed_credential"),
        ({"api-key": " "}, 401, "missing_credential"),
        ({"api-key": bad}, 401, "unsupported_algorithm"),
        ({"x-api-key": expired}, 401, "token_expired"),
        ({"x-api-key": f"Bearer {bad}"}, 401, "unsupported_algorithm"),
        ({"x-litellm-api-key": "sk-not-a-key-anyone-issued"}, 401, "invalid_key"),
        # the first credential header decides: a bad Authorization is not rescued by a good api-key
        ({"Authorization": f"Bearer {bad}", "api-key": good, "x-api-key": MASTER_KEY}, 401, "unsupported_algorithm"),
        # keys that are not the master key: a prefix, a longer string, the upstream's key
        ({"Authorization": f"Bearer {MASTER_KEY[:-1]}"}, 401, "invalid_key"),
        ({"Authorization": f"Bearer {MASTER_KEY}0"}, 401, "invalid_key"),
        ({"x-api-key": UPSTREAM_KEY}, 401, "invalid_key"),
    ]
    wrong = []
    for headers, want_status, want_reason in cases:
        status, body, got = client.post("/v1/chat/completions", chat_body(), headers=headers)
        if (status, reason(got)) != (want_status, want_reason):
            wrong.append((headers, status, reason(got), body))
        elif status >= 400:
            assert_openai_error(body, status)
            for secret in (good, bad, MASTER_KEY, UPSTREAM_KEY):
                assert secret not in json.dumps(body)
    assert wrong == []
    assert fresh_upstream.requests == []


def test_good_token_in_api_key_headers_is_accepted(client, idp, fresh_upstream):
    """LiteLLM reads api-key / x-api-key too (Bearer optional): the positive case of the test above."""
    for header in ("api-key", "x-api-key"):
        for value in (team_token(idp), f"Bearer {team_token(idp)}"):
            status, body, _ = client.post("/v1/chat/completions", chat_body(), headers={header: value})
            assert status == 200, (header, body)
    assert len(fresh_upstream.requests) == 4


TRAVERSALS = [
    "/v1/chat/completions/../../key/generate",
    "/v1/chat/completions/%2e%2e/%2e%2e/key/generate",
    "/v1/chat/completions/..%2f..%2fkey/generate",
    "//key/generate",
    "///key/generate",
    "/%2Fkey%2Fgenerate",
    "/key%2fgenerate",
    "/key%2Fgenerate",
    "/./key/generate",
    "/v1/./chat/completions",
    "/v1//chat/completions",
    "/v1/chat/completions/",
    "/v1/chat/completions/.",
    "/v1/chat/completions/..",
    "/v1/chat%2Fcompletions",
    "/v1/chat%2fcompletions",
    "/v1\\chat\\completions",
    "/v1/chat/completions\\..\\..\\key\\generate",
    "/%5Ckey%5Cgenerate",
    "/key%252Fgenerate",
    "/v1/chat%252Fcompletions",
    "/key/generate%00",
    "/v1/chat/completions%00",
    "/v1/chat/completions%00/../../key/generate",
    "/v1/chat/completions%0a",
    "/v1/chat/completions;/../../key/generate",
    "/key/generate/../../v1/chat/completions",
    "/v1/chat/completions/..;/..;/key/generate",
    "/%6Bey/generate",  # an encoded letter: the path has another spelling
    "/V1/CHAT/COMPLETIONS",
    "http://127.0.0.1/key/generate/../../v1/chat/completions",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_path_tricks_are_denied_and_not_forwarded(client, idp, fresh_upstream, target):
    """Raw request targets (http.client sends them unchanged) with a TEAM token, which may call
    /v1/chat/completions but not /key/generate. None may be read as another route."""
    body = json.dumps({**chat_body(), "user_id": "attacker", "team_id": "team-a"}).encode()
    status, raw, headers = raw_request(client.base_url, "POST", target, body=body, headers={
        "Authorization": f"Bearer {team_token(idp)}", "Content-Type": "application/json"})
    assert status in (400, 403, 404), (status, raw[:300])
    if headers.get("x-regate-reason"):  # answered by the app (not by the HTTP layer)
        assert_openai_error(json.loads(raw), status)
        assert headers["x-regate-reason"] in ("path_not_canonical", "route_not_allowed")
    assert fresh_upstream.requests == []


@pytest.mark.parametrize("script_name", ["/v1/chat", "/v1"])
def test_script_name_header_cannot_move_the_dispatched_route(client, idp, fresh_upstream, script_name):
    """gunicorn's own request loop by default takes a SCRIPT_NAME header from loopback peers and
    strips it from PATH_INFO, which Flask routes on: the decision would judge the target while
    another handler (/completions, /chat/completions) answers. regate's HTTP layer drops header
    names with `_` and never sets SCRIPT_NAME, so the header is inert and the target's own handler
    answers."""
    body = json.dumps({"prompt": "hello", **chat_body()}).encode()
    status, raw, headers = raw_request(client.base_url, "POST", "/v1/chat/completions", body=body, headers={
        "Authorization": f"Bearer {team_token(idp)}", "Content-Type": "application/json",
        "SCRIPT_NAME": script_name})
    assert status == 200, raw[:300]
    assert json.loads(raw)["object"] == "chat.completion"
    assert [r.path for r in fresh_upstream.requests] == ["/v1/chat/completions"]


def test_path_tricks_with_the_master_key_never_reach_the_upstream(client, fresh_upstream):
    """Even a caller that may call every route gets no second spelling of a path."""
    body = json.dumps(chat_body()).encode()
    for target in ("/v1//chat/completions", "/v1/chat/completions/", "/v1/chat%2Fcompletions",
                   "/x/../v1/chat/completions", "/v1/chat/completions%00"):
        status, raw, _ = raw_request(client.base_url, "POST", target, body=body, headers={
            "Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"})
        assert status == 400, (target, status, raw[:300])
    assert fresh_upstream.requests == []


def test_unsigned_admin_claims_cannot_reach_management(client, idp, fresh_upstream):
    """alg none / HS256-with-the-public-key tokens claiming the admin scope, on /key/generate."""
    claims = {k: v for k, v in idp.default_claims().items() if k != "sub"} | {"scope": "litellm_proxy_admin"}
    rsa = idp.key_of("RSA")
    for token in (compact({"alg": "none", "typ": "JWT"}, claims),
                  sign({"alg": "HS256", "typ": "JWT", "kid": rsa.kid}, claims, rsa.public_pem())):
        status, body, headers = client.post("/key/generate", {"user_id": "attacker"}, token=token)
        assert status == 401 and reason(headers) == "unsupported_algorithm", body
    assert fresh_upstream.requests == []
