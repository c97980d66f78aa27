"""Concurrent replicas on one database: migrations, spend and block events stay exact."""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import Counter

from regate.enforcer import migrations
from tests.store.records import make_record


def _run_threads(count: int, target) -> list:
    """Run target(i, barrier) in `count` threads started together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def _wrap(i: int) -> None:
        try:
            results[i] = target(i, barrier)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=_wrap, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


def test_replicas_migrating_at_once_apply_each_migration_once(open_store):
    stores = [open_store() for _ in range(4)]  # each with its own pool, like separate replicas

    def migrate(i: int, barrier: threading.Barrier):
        barrier.wait()
        return stores[i].migrate()

    results = _run_threads(len(stores), migrate)
    every = [m.version for m in migrations.MIGRATIONS]
    assert sorted(results, key=len) == [[]] * (len(stores) - 1) + [every]
    assert all(s.schema_version() == migrations.LATEST_VERSION for s in stores)
    stores[0].create_user("after-migration")  # the schema is usable from every replica
    assert stores[3].user_exists("after-migration")


def test_many_writers_record_exact_totals_and_one_row_per_request(open_store):
    stores = [open_store() for _ in range(3)]
    stores[0].migrate()
    threads, batches, per_batch = 8, 12, 25
    rng = random.Random(7)
    shared = [make_record(f"shared-{i}", prompt_tokens=rng.randrange(5000), completion_tokens=rng.randrange(900), team_id="t-shared", user_id=f"u{i % 3}") for i in range(60)]
    plans = []
    for t in range(threads):
        plan = []
        for b in range(batches):
            own = [
                make_record(f"w{t}-b{b}-{i}", prompt_tokens=rng.randrange(5000), completion_tokens=rng.randrange(900), team_id=f"t{t % 2}", user_id=f"u{i % 3}", key_hash="k-shared")
                for i in range(per_batch)
            ]
            # Every writer also replays some records that other writers log at the same time.
            plan.append(own + rng.sample(shared, 10))
        plans.append(plan)

    def write(t: int, barrier: threading.Barrier) -> int:
        store = stores[t % len(stores)]
        barrier.wait()
        return sum(store.record_spend(batch) for batch in plans[t])

    inserted = _run_threads(threads, write)
    unique = {r.request_id: r for plan in plans for batch in plan for r in batch}
    assert sum(inserted) == len(unique)  # each request was new to exactly one writer

    check = stores[0]
    rows = check.spend_logs(limit=100_000)
    assert len(rows) == len(unique)
    assert Counter(r["request_id"] for r in rows).most_common(1)[0][1] == 1
    expected: Counter = Counter()
    requests: Counter = Counter()
    for r in unique.values():
        for key in (("user", r.user_id), ("team", r.team_id), ("key", r.key_hash)):
            if key[1] is not None:
                expected[key] += r.spend_nanos
                requests[key] += 1
    for key, nanos in expected.items():
        assert check.spend_summary(*key) == {"spend_nanos": nanos, "requests": requests[key]}, key
    assert check.global_summary() == {"spend_nanos": sum(r.spend_nanos for r in unique.values()), "requests": len(unique)}


def test_block_snapshots_are_consistent_with_the_event_log_under_concurrent_writes(open_store, store_url):
    writers = [open_store() for _ in range(3)]
    writers[0].migrate()
    follower_store = open_store()
    teams = [f"team-{i}" for i in range(6)]
    done = threading.Event()
    snapshots: list[tuple[int, list[str]]] = []
    followed: dict[str, bool] = {}
    follower_errors: list[BaseException] = []

    def follow() -> None:
        # What a replica does: one snapshot, then apply events after its seq, until the end.
        try:
            seq, blocked = follower_store.blocked_teams_snapshot()
            followed.update({t: True for t in blocked})
            while True:
                finished = done.is_set()
                for s, team, is_blocked in follower_store.block_events_since(seq):
                    assert s > seq, "events must arrive in increasing seq order"
                    seq = s
                    followed[team] = is_blocked
                snapshots.append(follower_store.blocked_teams_snapshot())
                if finished:
                    return
        except BaseException as e:  # noqa: BLE001
            follower_errors.append(e)

    follower = threading.Thread(target=follow)
    follower.start()

    def toggle(i: int, barrier: threading.Barrier) -> None:
        rng = random.Random(i)
        barrier.wait()
        for _ in range(25):
            writers[i].set_team_blocked(rng.choice(teams), rng.random() < 0.6)

    try:
        _run_threads(len(writers), toggle)
    finally:
        done.set()
        follower.join(60)
    assert not follower_errors, follower_errors
    assert len(snapshots) >= 2

    events = writers[0].block_events_since(0)
    assert len(events) == 75
    final_seq, final_blocked = writers[0].blocked_teams_snapshot()
    assert final_seq == events[-1][0]
    # The follower, which only read events after its first snapshot, ends where the store is.
    assert sorted(t for t, b in followed.items() if b) == final_blocked
    # Every snapshot equals the state obtained by replaying exactly the events up to its seq.
    for seq, blocked in snapshots:
        state: dict[str, bool] = {}
        for s, team, is_blocked in events:
            if s <= seq:
                state[team] = is_blocked
        assert sorted(t for t, b in state.items() if b) == blocked, seq


def _open_and_migrate(path: str, barrier, results) -> None:
    from regate.enforcer.store import Store

    barrier.wait()  # every process opens the new file at once, as the workers of one `regate serve`
    try:
        store = Store.from_url(None, default_sqlite_path=path)
        store.migrate()
        store.close()
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - reported by the test
        results.put(repr(e))


def test_processes_opening_a_new_sqlite_file_at_once_all_start(tmp_path):
    """Switching a new file to WAL is not covered by SQLite's busy timeout: without a retry,
    about one round in ten had a process fail with "database is locked"."""
    context = multiprocessing.get_context("fork")
    outcomes: Counter = Counter()
    for round_ in range(12):
        barrier, results = context.Barrier(4), context.Queue()
        path = str(tmp_path / f"round-{round_}.db")
        processes = [context.Process(target=_open_and_migrate, args=(path, barrier, results)) for _ in range(4)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(60)
        outcomes.update(results.get(timeout=5) for _ in processes)
    assert outcomes == Counter({"ok": 48})
