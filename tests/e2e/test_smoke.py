"""The shortest end-to-end path: a team token's chat completion reaches the upstream."""

from .conftest import UPSTREAM_KEY, chat_body, team_token


def test_team_chat_completion_is_proxied(client, idp, upstream):
    status, body, headers = client.post("/v1/chat/completions", chat_body(), token=team_token(idp))
    assert status == 200, body
    assert body["object"] == "chat.completion"
    received = upstream.last_request
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert received.body["model"] == "gpt-4o-mini"
    assert headers["X-Request-ID"] == received.headers["x-request-id"]
