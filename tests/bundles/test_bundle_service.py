"""The bundle service: OPA's bundle protocol (ETag, 304, long polling), recompiling on change."""

from __future__ import annotations

import io
import tarfile
import threading

import pytest
from flask.testing import FlaskClient

from regate.enforcer.bundle_service import BUNDLE_CONTENT_TYPE, BUNDLE_PATH, BundleSource, create_bundle_app

CONFIG_V1 = "general_settings:\n  enable_jwt_auth: true\n  litellm_jwtauth:\n    team_allowed_routes: [openai_routes]\n"
CONFIG_V2 = CONFIG_V1.replace("[openai_routes]", "[openai_routes, /spend/logs]")


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_V1)
    return path


@pytest.fixture
def source(config):
    s = BundleSource(config)
    assert s.refresh() is True
    return s


@pytest.fixture
def client(source) -> FlaskClient:
    return create_bundle_app(source).test_client()


def test_serves_the_bundle_with_etag(client, source):
    resp = client.get(BUNDLE_PATH)
    assert resp.status_code == 200
    assert resp.headers["ETag"] == source.etag
    assert resp.headers["Content-Type"] == BUNDLE_CONTENT_TYPE  # tells OPA long polling is supported
    with tarfile.open(fileobj=io.BytesIO(resp.data)) as tar:
        assert "/.manifest" in tar.getnames()


def test_unchanged_bundle_is_304(client, source):
    resp = client.get(BUNDLE_PATH, headers={"If-None-Match": source.etag})
    assert resp.status_code == 304
    assert resp.data == b""
    # OPA may send superseded etags after the current one.
    assert client.get(BUNDLE_PATH, headers={"If-None-Match": f'"old", {source.etag}'}).status_code == 304
    assert client.get(BUNDLE_PATH, headers={"If-None-Match": '"old"'}).status_code == 200


def waits_of(source, monkeypatch) -> tuple[list[float], threading.Event]:
    """Record each long poll's wait (its timeout) as it starts; the event is set when one has."""
    waits, waiting = [], threading.Event()
    wait_for_change = source.wait_for_change

    def recorded(etag: str, timeout: float) -> None:
        waits.append(timeout)
        waiting.set()
        wait_for_change(etag, timeout)

    monkeypatch.setattr(source, "wait_for_change", recorded)
    return waits, waiting


def test_long_poll_returns_as_soon_as_a_new_revision_exists(client, source, config, monkeypatch):
    old = source.etag
    waits, waiting = waits_of(source, monkeypatch)

    def change():
        waiting.wait(10)  # once the request is held
        config.write_text(CONFIG_V2)
        source.refresh()

    threading.Thread(target=change).start()
    resp = client.get(BUNDLE_PATH, headers={"If-None-Match": old, "Prefer": "modes=snapshot,delta;wait=10"})
    # Answered with the new revision: not at the end of the 10 s wait, which would be a 304.
    assert resp.status_code == 200 and waits == [10]
    assert resp.headers["ETag"] != old


def test_long_poll_times_out_with_304(client, source, monkeypatch):
    waits, _ = waits_of(source, monkeypatch)
    resp = client.get(BUNDLE_PATH, headers={"If-None-Match": source.etag, "Prefer": "wait=1"})
    assert resp.status_code == 304 and waits == [1]


def test_broken_config_keeps_the_last_good_revision(client, source, config):
    good = source.etag
    config.write_text("general_settings:\n  enable_jwt_auth: maybe\n")
    assert source.refresh() is False
    health = client.get("/health").get_json()
    assert health["etag"] == good
    assert "expected true or false" in health["last_error"]
    assert client.get(BUNDLE_PATH).headers["ETag"] == good
    config.write_text(CONFIG_V2)
    assert source.refresh() is True
    assert client.get("/health").get_json()["last_error"] is None


def test_same_content_is_not_a_new_revision(source, config):
    config.write_text(CONFIG_V1)
    assert source.refresh() is False


POLICY = 'package regate.custom.tenant\n\ndeny contains {"code": "c", "message": "m", "status": 403} if input.request.path == "{path}"\n'


def test_a_changed_custom_policy_is_a_new_revision(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_V1 + "    custom_policies: [tenant.rego]\n")
    policy = tmp_path / "tenant.rego"
    policy.write_text(POLICY.replace("{path}", "/a"))
    source = BundleSource(config)
    assert source.refresh() is True
    first = source.etag
    assert source.refresh() is False and source.etag == first
    policy.write_text(POLICY.replace("{path}", "/b"))
    assert source.refresh() is True and source.etag != first
    policy.write_text(POLICY.replace("{path}", "/b") + "\ndeny contains 1 if {\n")  # no longer compiles
    assert source.refresh() is False and "tenant.rego" in source.last_error
    policy.unlink()
    assert source.refresh() is False and "cannot read custom policy" in source.last_error
