"""The shortest end-to-end path: a team token's chat completion reaches the upstream."""

from tests.support.enforcer import EnforcerProcess

from .conftest import EXAMPLE, UPSTREAM_KEY, Client, chat_body, enforcer_env, team_token


def test_team_chat_completion_is_proxied(client, idp, upstream):
    status, body, headers = client.post("/v1/chat/completions", chat_body(), token=team_token(idp))
    assert status == 200, body
    assert body["object"] == "chat.completion"
    received = upstream.last_request
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert received.body["model"] == "gpt-4o-mini"
    assert headers["X-Request-ID"] == received.headers["x-request-id"]


def test_several_workers_start_on_a_fresh_sqlite_file(idp, upstream, opa, tmp_path):
    """Every worker boots on the new file (they race to switch it to WAL) and serves."""
    with EnforcerProcess(EXAMPLE, env=enforcer_env(idp, upstream), opa_url=opa.url, data_dir=tmp_path,
                         workers=4) as enforcer:
        client = Client(enforcer.url)
        try:
            for _ in range(8):
                status, body, _ = client.post("/v1/chat/completions", chat_body(), token=team_token(idp))
                assert status == 200, body
        finally:
            client.close()
