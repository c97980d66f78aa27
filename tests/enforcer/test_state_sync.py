"""enforcer.state_sync.BlockSync: a real OPA (the example bundle) and a SQLite store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from regate import compiler
from regate.enforcer.decisions import OpaClient
from regate.enforcer.state_sync import BlockSync
from regate.enforcer.store import Store
from tests.support.opa import OpaServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "regate.yaml"


class RecordingOpa(OpaClient):
    """The real client, remembering the block patches it sends."""

    def __init__(self, url: str):
        super().__init__(url)
        self.patches: list[tuple[str, bool]] = []

    def patch_blocked(self, team_id: str, blocked: bool) -> None:
        self.patches.append((team_id, blocked))
        super().patch_blocked(team_id, blocked)


class StaleSnapshot:
    """A store whose snapshot was taken earlier: what a worker sees when its load races a block."""

    def __init__(self, store: Store, snapshot: tuple[int, list[str]]):
        self._store = store
        self._snapshot = snapshot

    def blocked_teams_snapshot(self):
        return self._snapshot

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync") / "bundle.tar.gz"
    compiler.bundle.write(compiler.bundle_files(compiler.load_config(EXAMPLE)), out)
    return out


@pytest.fixture
def opa_url(opa_bin, bundle):
    with OpaServer(opa_bin, bundle=str(bundle)) as server:  # a fresh OPA each: no state yet
        yield server.url


@pytest.fixture
def store(tmp_path):
    s = Store.from_url(None, default_sqlite_path=tmp_path / "state.db")
    s.migrate()
    yield s
    s.close()


def blocked_in_opa(url: str) -> dict:
    client = OpaClient(url)
    try:
        return client.get_state("blocked_teams")
    finally:
        client.close()


def test_a_workers_load_never_undoes_a_siblings_newer_block(store, opa_url):
    store.set_team_blocked("old-team", True)
    first = BlockSync(store, OpaClient(opa_url))
    first.sync_once()
    stale = store.blocked_teams_snapshot()  # the second worker reads the store now ...
    store.set_team_blocked("new-team", True)
    first.pushed("new-team", True)  # ... the first serves a block and pushes it ...
    second = BlockSync(StaleSnapshot(store, stale), OpaClient(opa_url))
    second.sync_once()  # ... then the second's load reaches OPA
    assert blocked_in_opa(opa_url) == {"old-team": True, "new-team": True}
    assert second.loaded


def test_catching_up_applies_each_teams_latest_event_only(store, opa_url):
    OpaClient(opa_url).put_state({"blocked_teams": {}, "sync_id": "sibling:0"})  # a sibling loaded at 0
    for team, blocked in (("t1", True), ("t2", True), ("t1", False), ("t3", True), ("t3", False), ("t3", True)):
        store.set_team_blocked(team, blocked)
    opa = RecordingOpa(opa_url)
    sync = BlockSync(store, opa)
    sync.sync_once()
    # Never t1 blocked on the way to unblocked, nor t3 unblocked on the way to blocked.
    assert opa.patches == [("t1", False), ("t2", True), ("t3", True)]
    assert blocked_in_opa(opa_url) == {"t2": True, "t3": True}


@pytest.mark.parametrize("marker", ["elsewhere:999", "not-a-marker", None])
def test_a_state_that_is_not_from_this_block_log_is_replaced(store, opa_url, marker):
    store.set_team_blocked("real-team", True)
    state = {"blocked_teams": {"ghost-team": True}}
    if marker is not None:
        state["sync_id"] = marker
    OpaClient(opa_url).put_state(state)
    sync = BlockSync(store, OpaClient(opa_url))
    sync.sync_once()
    assert blocked_in_opa(opa_url) == {"real-team": True}


class FlakyStore:
    """A store whose snapshot fails `failures` times with an error no layer turned into a RegateError."""

    def __init__(self, store: Store, failures: int):
        self._store = store
        self.failures = failures

    def blocked_teams_snapshot(self):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("postgresql://regate:s3cret@db/regate went away")
        return self._store.blocked_teams_snapshot()

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_the_loop_outlives_an_unexpected_error_and_loads_the_state(store, opa_url, caplog):
    store.set_team_blocked("team-x", True)
    flaky = FlakyStore(store, failures=2)
    sync = BlockSync(flaky, OpaClient(opa_url), poll_interval=0.01)
    sync.start()
    try:
        deadline = time.monotonic() + 10
        while not sync.loaded and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sync.loaded and flaky.failures == 0
        assert blocked_in_opa(opa_url) == {"team-x": True}
    finally:
        sync.stop()
    failures = [r.getMessage() for r in caplog.records if "unexpectedly" in r.getMessage()]
    assert len(failures) == 2 and all("RuntimeError at" in m for m in failures)
    assert "s3cret" not in caplog.text
