"""What operators see: Prometheus metrics on /metrics and one structured JSON log line per request
(EnforcerProcess.output is the enforcer's stdout and stderr), which never carries a secret.
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

from tests.support.decision_log import decisions
from tests.support.forge import sign
from tests.support.mock_openai import Behavior

from .conftest import (
    EXAMPLE,
    MASTER_KEY,
    UPSTREAM_KEY,
    Client,
    EnforcerProcess,
    SseStream,
    chat_body,
    enforcer_env,
    metric,
    parse_metrics,
    sample_name,
    team_token,
)


def access_lines(output: str) -> list[dict]:
    """The structured access-log lines of the enforcer's output."""
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "request_id" in record:
                lines.append(record)
    return lines


def lines_of(enforcer, request_ids: list[str], timeout: float = 5.0) -> dict[str, list[dict]]:
    """request id -> its access lines; waits until every id has one (lines are written at close)."""
    deadline = time.monotonic() + timeout
    while True:
        by_id = {rid: [r for r in access_lines(enforcer.output) if r["request_id"] == rid] for rid in request_ids}
        if all(by_id.values()) or time.monotonic() > deadline:
            return by_id
        time.sleep(0.05)


def test_metrics_count_decisions_latencies_and_requests(client, idp, fresh_upstream):
    wanted = {
        "allow": sample_name("regate_decisions_total", result="allow", reason=""),
        "route": sample_name("regate_decisions_total", result="deny", reason="route_not_allowed"),
        "missing": sample_name("regate_decisions_total", result="deny", reason="missing_credential"),
        "decision_count": "regate_decision_seconds_count",
        "decision_inf": sample_name("regate_decision_seconds_bucket", le="+Inf"),
        "upstream_count": sample_name("regate_upstream_seconds_count", model="gpt-4o-mini"),
        "ok": sample_name("regate_requests_total", status="200"),
        "forbidden": sample_name("regate_requests_total", status="403"),
        "unauthorized": sample_name("regate_requests_total", status="401"),
    }

    def snapshot() -> dict[str, float]:
        status, text, _ = client.get("/metrics")
        assert status == 200
        samples = parse_metrics(text)
        return {name: samples.get(sample, 0.0) for name, sample in wanted.items()}

    before = snapshot()
    token = team_token(idp, team="team-metrics")
    assert client.post("/v1/chat/completions", chat_body(), token=token)[0] == 200
    assert client.post("/key/generate", {}, token=token)[0] == 403
    assert client.post("/v1/chat/completions", chat_body())[0] == 401
    # a token the enforcer refuses itself is not a decision: OPA is never asked
    assert client.post("/v1/chat/completions", chat_body(), token="not.a.token")[0] == 401
    after = snapshot()

    delta = {name: after[name] - before[name] for name in before}
    assert delta == {"allow": 1, "route": 1, "missing": 1, "decision_count": 3, "decision_inf": 3,
                     "upstream_count": 1, "ok": 2, "forbidden": 1, "unauthorized": 2}  # "ok": with the 1st /metrics
    text = client.get("/metrics")[1]
    for family in ("regate_decisions_total", "regate_decision_seconds", "regate_upstream_seconds",
                   "regate_requests_in_flight"):
        assert f"# TYPE {family} " in text, family
    assert 'regate_decision_seconds_bucket{le="0.005"}' in text


def test_in_flight_gauge_counts_open_streams(client, enforcer, idp, fresh_upstream):
    m = SimpleNamespace(client=client)
    idle = metric(m, "regate_requests_in_flight")  # the /metrics request itself is in flight
    hold = threading.Event()
    fresh_upstream.push(Behavior(hold=hold))
    stream = SseStream(enforcer.url, team_token(idp), chat_body(stream=True))
    try:
        stream.read_events(1)
        assert metric(m, "regate_requests_in_flight") == idle + 1
        hold.set()
        stream.read_rest()
    finally:
        hold.set()
        stream.close()
    deadline = time.monotonic() + 5
    while metric(m, "regate_requests_in_flight") != idle and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(m, "regate_requests_in_flight") == idle


def test_one_json_access_line_per_request(client, enforcer, opa, idp, fresh_upstream):
    token = team_token(idp, team="team-logs", user="log-user")
    ids = {}
    _, _, headers = client.post("/v1/chat/completions", chat_body(), token=token)
    ids["allowed"] = headers["X-Request-ID"]
    _, _, headers = client.post("/key/generate", {}, token=token)
    ids["denied"] = headers["X-Request-ID"]
    _, _, headers = client.post("/v1/chat/completions", chat_body(), token="a.b.c")
    ids["bad_token"] = headers["X-Request-ID"]
    _, _, headers = client.post("/v1//chat/completions", chat_body(), token=token)
    ids["bad_path"] = headers["X-Request-ID"]
    _, body, headers = client.post("/v1/chat/completions", chat_body(stream=True), token=token)
    ids["stream"] = headers["X-Request-ID"]
    assert len(set(ids.values())) == len(ids)

    by_id = lines_of(enforcer, list(ids.values()))
    assert all(len(lines) == 1 for lines in by_id.values()), by_id
    line = {name: by_id[rid][0] for name, rid in ids.items()}
    assert line["allowed"] | {"ms": 0, "decision_id": None} == {
        "request_id": ids["allowed"], "decision_id": None, "method": "POST", "path": "/v1/chat/completions",
        "status": 200, "reason": None, "role": "team", "user_id": "log-user", "team_id": "team-logs",
        "model": "gpt-4o-mini", "ms": 0}
    # The decision ids are OPA's: its decision log has each one, for this request's input.
    logged = decisions(opa.log_lines)
    for name, path in (("allowed", "/v1/chat/completions"), ("denied", "/key/generate")):
        decision_id = line[name]["decision_id"]
        assert isinstance(decision_id, str) and decision_id in logged, (name, line[name])
        assert logged[decision_id]["input"]["request"]["path"] == path
        # Masked by the bundle's policy: of the token's claims only the ids stay (team_id, sub, iss).
        assert logged[decision_id]["input"]["credential"]["claims"] == {"team_id": "team-logs", "sub": "log-user",
                                                                       "iss": idp.issuer}
        assert logged[decision_id]["masked"] == ["/input/credential/claims"]
        assert logged[decision_id]["erased"] == ["/result/subject/email"]
    assert "log-user@example.com" not in "\n".join(opa.log_lines)
    assert line["bad_token"]["decision_id"] is None and line["bad_path"]["decision_id"] is None  # refused before OPA
    assert (line["denied"]["status"], line["denied"]["reason"], line["denied"]["role"]) == (
        403, "route_not_allowed", "team")
    assert (line["bad_token"]["status"], line["bad_token"]["role"]) == (401, None)
    assert line["bad_token"]["reason"] in ("malformed_token", "unknown_key", "bad_signature")
    assert (line["bad_path"]["status"], line["bad_path"]["reason"], line["bad_path"]["path"]) == (
        400, "path_not_canonical", "/v1//chat/completions")
    assert line["stream"]["status"] == 200 and isinstance(line["stream"]["ms"], (int, float))


def test_managed_opa_logs_the_decisions_the_access_log_names(idp, upstream, tmp_path):
    """`regate serve` without --opa-url: its own OPA child logs decisions to the same output."""
    managed = EnforcerProcess(EXAMPLE, env=enforcer_env(idp, upstream), data_dir=tmp_path).start()
    client = Client(managed.url)
    try:
        token = team_token(idp, team="team-managed", user="managed-user")
        status, body, headers = client.get("/v1/models", token=token)
        assert status == 200, body
        (line,) = lines_of(managed, [headers["X-Request-ID"]])[headers["X-Request-ID"]]
        assert client.get("/v1/models", token=MASTER_KEY)[0] == 200
    finally:
        client.close()
        managed.stop()
        managed.wait()
    decision_id = line["decision_id"]
    assert isinstance(decision_id, str), line
    logged = decisions(managed.output.splitlines())
    assert logged[decision_id]["input"]["request"]["path"] == "/v1/models"
    assert token not in managed.output and MASTER_KEY not in managed.output  # claims are logged, never credentials
    # ... and only the id claims: the managed OPA names the bundle's mask policy too.
    assert logged[decision_id]["input"]["credential"]["claims"] == {"team_id": "team-managed", "sub": "managed-user",
                                                                   "iss": idp.issuer}
    assert "managed-user@example.com" not in managed.output


def test_no_secret_ever_reaches_the_output(client, enforcer, idp, admin_token, fresh_upstream):
    """Tokens, the master key, virtual keys and the upstream key are used every way a client can,
    successfully and not; none of them may appear in a log line or an error answer."""
    team = team_token(idp, team="team-secrets", user="secret-user")
    rsa = idp.key_of("RSA")
    forged = sign({"alg": "HS256", "kid": rsa.kid}, {**idp.default_claims(), "team_id": "t"}, rsa.public_pem())
    expired = idp.mint({"team_id": "t", "exp": 1000}, now=0)
    status, body, _ = client.post("/key/generate", {"user_id": "secret-user"}, token=admin_token)
    assert status == 200, body
    virtual_key = body["key"]
    answers, request_ids = [], []

    def call(method, path, **kw):
        status, body, headers = client.request(method, path, json_body=chat_body() if method == "POST" else None,
                                               **kw)
        answers.append(json.dumps(body))
        request_ids.append(headers["X-Request-ID"])
        return status

    assert call("POST", "/v1/chat/completions", token=team) == 200
    assert call("POST", "/v1/chat/completions", token=virtual_key) == 200
    assert call("POST", "/v1/chat/completions", headers={"x-api-key": virtual_key}) == 200
    assert call("GET", "/global/spend", token=MASTER_KEY) == 200
    assert call("GET", "/global/spend", token=admin_token) == 200
    assert call("POST", "/key/generate", token=team) == 403
    assert call("POST", "/v1/chat/completions", token=forged) == 401
    assert call("POST", "/v1/chat/completions", token=expired) == 401
    assert call("POST", "/v1/chat/completions", token=virtual_key + "x") == 401
    assert call("POST", "/v1/chat/completions", token=UPSTREAM_KEY) == 401
    assert call("POST", "/v1/chat/completions", headers={"api-key": MASTER_KEY + "0"}) == 401
    assert call("POST", "/v1/chat/completions", headers={"Authorization": f"Basic {MASTER_KEY}"}) == 401
    assert call("GET", f"/v1/models?api_key={MASTER_KEY}&token={team}", token=team) == 200
    # the upstream refuses regate's key and quotes it back
    fresh_upstream.push(Behavior.fail(401, f"Incorrect API key provided: {UPSTREAM_KEY}"))
    assert call("POST", "/v1/chat/completions", token=team) == 502
    fresh_upstream.push(Behavior.fail(400, f"bad request with key {UPSTREAM_KEY}"))
    assert call("POST", "/v1/chat/completions", token=team) == 400

    by_id = lines_of(enforcer, request_ids)  # every call was logged (so the check below saw its line)
    assert all(len(lines) == 1 for lines in by_id.values()), by_id
    output = enforcer.output
    secrets = {"master key": MASTER_KEY, "upstream key": UPSTREAM_KEY, "virtual key": virtual_key}
    for name, token in {"team token": team, "admin token": admin_token, "forged": forged, "expired": expired}.items():
        _, payload, signature = token.split(".")
        secrets |= {name: token, f"{name} payload": payload, f"{name} signature": signature}
    for name, secret in secrets.items():
        assert secret not in output, f"the {name} appears in the enforcer's output"
        for answer in answers:
            assert secret not in answer, f"the {name} appears in an answer: {answer}"
    assert "authorization" not in output.lower()
