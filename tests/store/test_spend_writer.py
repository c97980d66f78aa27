"""SpendWriter: batching off the request path, store outages, queue overflow, spool and replay."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone

import pytest

from regate.enforcer.spend import SpendWriter
from regate.enforcer.spend_record import SpendRecord
from regate.enforcer.store import Store
from tests.store.records import make_record
from tests.support.net import free_port
from tests.support.postgres import PostgresCluster


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class BatchLog:
    """The real store, plus a log of the batch sizes it was asked to write successfully."""

    def __init__(self, store: Store):
        self._store = store
        self.batches: list[int] = []

    def record_spend(self, records):
        inserted = self._store.record_spend(records)
        self.batches.append(len(records))
        return inserted

    def __getattr__(self, name):
        return getattr(self._store, name)


def records(prefix: str, n: int, **identities) -> list[SpendRecord]:
    return [make_record(f"{prefix}-{i:05d}", prompt_tokens=i % 977, completion_tokens=i % 131, **identities) for i in range(n)]


def spool_files(spool_dir) -> list:
    return sorted(p for p in spool_dir.iterdir() if p.name.startswith("spend-")) if spool_dir.exists() else []


def spooled_ids(spool_dir) -> Counter:
    ids: Counter = Counter()
    for path in spool_files(spool_dir):
        for line in path.read_text().splitlines():
            ids[json.loads(line)["request_id"]] += 1
    return ids


def assert_stored_exactly(store: Store, expected: list[SpendRecord], team: str) -> None:
    rows = store.spend_logs(team_id=team, limit=100_000)
    assert sorted(r["request_id"] for r in rows) == sorted(r.request_id for r in expected)
    assert store.spend_summary("team", team) == {"spend_nanos": sum(r.spend_nanos for r in expected), "requests": len(expected)}


@pytest.fixture
def dead_store(tmp_path):
    """A PostgreSQL store whose server is not there (nothing listens on the port)."""
    s = Store.from_url(f"postgresql://regate:pw@127.0.0.1:{free_port()}/regate", default_sqlite_path=str(tmp_path / "unused.db"), connect_timeout=2)
    yield s
    s.close()


def test_records_are_written_in_batches(store: Store, tmp_path):
    log = BatchLog(store)
    writer = SpendWriter(log, batch_size=500, flush_interval=0.2, spool_dir=tmp_path / "spool")
    batch = records("b", 1200, team_id="t-batch")
    for r in batch:  # queued before the worker runs, so the batch boundaries are deterministic
        writer.submit(r)
    assert writer.stats()["queued"] == 1200
    writer.start()
    wait_for(lambda: writer.stats()["written"] == 1200, what="1200 records written")
    writer.close(timeout=10)
    assert log.batches == [500, 500, 200]
    assert_stored_exactly(store, batch, "t-batch")
    stats = writer.stats()
    assert (stats["queued"], stats["spooled"], stats["retries"]) == (0, 0, 0)


def test_close_flushes_what_is_queued(store: Store, tmp_path):
    # A flush interval longer than the test: only close() can have written these.
    writer = SpendWriter(store, batch_size=500, flush_interval=60, spool_dir=tmp_path / "spool")
    writer.start()
    batch = records("c", 37, team_id="t-close")
    for r in batch:
        writer.submit(r)
    writer.close(timeout=10)
    assert_stored_exactly(store, batch, "t-close")
    assert writer.stats()["written"] == 37 and writer.stats()["queued"] == 0
    assert spool_files(tmp_path / "spool") == []


def test_a_database_outage_loses_nothing(tmp_path):
    with PostgresCluster() as pg:
        store = Store.from_url(pg.create_database(), default_sqlite_path=str(tmp_path / "unused.db"), connect_timeout=2)
        store.migrate()
        writer = SpendWriter(store, flush_interval=0.05, max_backoff=0.2, spool_dir=tmp_path / "spool")
        writer.start()
        try:
            before = records("before", 10, team_id="t-outage")
            for r in before:
                writer.submit(r)
            wait_for(lambda: writer.stats()["written"] == 10, what="first records written")

            pg.stop()
            during = records("during", 40, team_id="t-outage")
            for r in during:
                writer.submit(r)  # returns at once although the store is down
            wait_for(lambda: writer.stats()["retries"] >= 3, what="failed write attempts")
            assert writer.stats()["written"] == 10

            pg.start()
            wait_for(lambda: writer.stats()["written"] == 50, what="backlog written after recovery")
        finally:
            writer.close(timeout=10)
        assert_stored_exactly(store, before + during, "t-outage")
        assert writer.stats()["spooled"] == 0
        store.close()


def test_queue_overflow_and_close_while_down_go_to_the_spool_and_are_replayed(store: Store, dead_store: Store, tmp_path):
    spool = tmp_path / "spool"
    writer = SpendWriter(dead_store, max_queue=10, max_backoff=0.05, spool_dir=spool)
    batch = records("q", 25, team_id="t-spool")
    for r in batch:
        writer.submit(r)
    stats = writer.stats()
    assert (stats["queued"], stats["queue_full"], stats["spooled"]) == (10, 15, 15)
    assert spooled_ids(spool) == Counter(r.request_id for r in batch[10:])

    writer.start()
    wait_for(lambda: writer.stats()["retries"] >= 1, what="a failed write")
    writer.close(timeout=0.5)  # the store is still down: the rest goes to the spool
    assert writer.stats()["spooled"] == 25 and writer.stats()["queued"] == 0
    assert spooled_ids(spool) == Counter(r.request_id for r in batch)
    for path in spool_files(spool):
        assert path.stat().st_mode & 0o077 == 0  # spool files are private

    # A replica that starts while the store is still down keeps the files for later.
    still_down = SpendWriter(dead_store, spool_dir=spool)
    still_down.start()
    still_down.close(timeout=0.2)
    assert spooled_ids(spool) == Counter(r.request_id for r in batch)

    recovered = SpendWriter(store, spool_dir=spool)
    recovered.start()
    assert recovered.stats()["replayed"] == 25
    recovered.close(timeout=5)
    assert_stored_exactly(store, batch, "t-spool")
    assert spool_files(spool) == []


def test_a_live_writers_spool_file_is_not_claimed(store: Store, dead_store: Store, tmp_path):
    spool = tmp_path / "spool"
    owner = SpendWriter(dead_store, max_queue=1, spool_dir=spool)
    batch = records("live", 3, team_id="t-live")
    for r in batch:
        owner.submit(r)
    assert owner.stats()["spooled"] == 2

    other = SpendWriter(store, spool_dir=spool)  # e.g. another gunicorn worker starting up
    other.start()
    assert other.stats()["replayed"] == 0
    assert sum(spooled_ids(spool).values()) == 2  # left alone: its owner may still append

    owner.close(timeout=0.3)  # store still down: the queued one joins the spool, the lock is released
    assert sum(spooled_ids(spool).values()) == 3
    assert other.replay_spool() == 3
    other.close(timeout=5)
    assert_stored_exactly(store, batch, "t-live")


def test_replay_is_idempotent_and_skips_a_torn_last_line(store: Store, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    batch = records("torn", 4, team_id="t-torn")
    store.record_spend(batch[:3])  # already written before the process died
    lines = [r.to_json() for r in batch] + ['{"request_id": "torn-99", "started_at": "2025-']
    (spool / "spend-deadhost-123-abcd.jsonl").write_text("\n".join(lines))

    writer = SpendWriter(store, spool_dir=spool)
    writer.start()
    writer.close(timeout=5)
    stats = writer.stats()
    assert (stats["replayed"], stats["corrupt_lines"]) == (4, 1)
    assert_stored_exactly(store, batch, "t-torn")  # the three already written count once
    assert spool_files(spool) == []


def test_an_idle_writer_replays_its_own_spool(store: Store, tmp_path):
    spool = tmp_path / "spool"
    writer = SpendWriter(store, max_queue=1, flush_interval=0.05, replay_interval=0.1, spool_dir=spool)
    batch = records("idle", 5, team_id="t-idle")
    for r in batch:
        writer.submit(r)  # a burst larger than the queue: four go to the spool
    assert writer.stats()["spooled"] == 4
    writer.start()
    wait_for(lambda: store.spend_summary("team", "t-idle")["requests"] == 5, what="spooled records replayed")
    # By the running worker (its own thread), before any close(); it counts a replay once the rows
    # are committed and the spool file is gone, a moment after they show, so the counter is polled too.
    wait_for(lambda: writer.stats()["replayed"] == 4, what="the replay counted")
    writer.close(timeout=5)
    assert_stored_exactly(store, batch, "t-idle")
    assert spool_files(spool) == []


def test_a_batch_a_healthy_store_refuses_is_parked_in_the_spool(tmp_path):
    # A reachable store without its schema fails every write while ping succeeds.
    store = Store.from_url(None, default_sqlite_path=str(tmp_path / "unmigrated.db"))
    spool = tmp_path / "spool"
    writer = SpendWriter(store, poison_attempts=2, max_backoff=0.05, flush_interval=0.05, replay_interval=3600, spool_dir=spool)
    writer.start()
    batch = records("parked", 3, team_id="t-parked")
    for r in batch:
        writer.submit(r)
    wait_for(lambda: writer.stats()["spooled"] == 3, what="refused batch spooled")
    writer.close(timeout=5)

    store.migrate()
    replayer = SpendWriter(store, spool_dir=spool)
    replayer.start()
    replayer.close(timeout=5)
    assert_stored_exactly(store, batch, "t-parked")
    store.close()


def test_submit_never_raises(store: Store, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    writer = SpendWriter(store, max_queue=1, spool_dir=not_a_dir)
    writer.submit(make_record("n1"))
    writer.submit(make_record("n2"))  # queue full and the spool cannot be created: counted, not raised
    assert writer.stats()["spool_errors"] == 1
    writer.close(timeout=5)
    assert [r["request_id"] for r in store.spend_logs()] == ["n1"]


def test_submit_after_close_is_spooled(store: Store, tmp_path):
    spool = tmp_path / "spool"
    writer = SpendWriter(store, spool_dir=spool)
    writer.start()
    writer.close(timeout=5)
    writer.submit(make_record("late", team_id="t-late"))
    assert writer.stats()["spooled"] == 1 and spooled_ids(spool) == Counter({"late": 1})


def test_spend_record_validation_and_json_round_trip():
    record = make_record("rt-1", user_id="ü", team_id="t", key_hash="abc", end_user_id="e", organization_id="o")
    assert SpendRecord.from_json(record.to_json()) == record
    now = datetime.now(timezone.utc)
    good = dict(request_id="x", started_at=now, ended_at=now, model="m", route="/r", prompt_tokens=1, completion_tokens=1, total_tokens=2, spend_nanos=5)
    SpendRecord(**good)
    for bad in (
        {"spend_nanos": 0.5},
        {"spend_nanos": True},
        {"spend_nanos": 2**63},
        {"prompt_tokens": -1},
        {"started_at": datetime(2025, 1, 1)},
        {"request_id": ""},
        {"team_id": "a\x00b"},
        {"model": "\ud800"},
        {"user_id": 7},
    ):
        with pytest.raises(ValueError):
            SpendRecord(**(good | bad))
    with pytest.raises(ValueError):
        SpendRecord.from_json(json.dumps({**json.loads(record.to_json()), "extra": 1}))
