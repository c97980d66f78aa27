"""enforcer.ratelimit's counters under contention: Redis (a real server) and the host's SQLite file."""

from __future__ import annotations

import sqlite3
import threading
import uuid

import pytest

from regate.enforcer.ratelimit import (
    MAX_REDIS_CONNECTIONS,
    Limit,
    LimiterUnavailable,
    RateLimited,
    RedisLimiter,
    SqliteLimiter,
)
from tests.support.redis import redis_server, redis_url  # noqa: F401 - fixtures for these tests

RPM = 50


def admit_all(limiter, n: int, outcomes: list) -> None:
    for _ in range(n):
        try:
            limiter.admit(uuid.uuid4().hex, [Limit("key:k1", rpm=RPM)])
            outcomes.append("admitted")
        except RateLimited:
            outcomes.append("limited")
        except LimiterUnavailable:
            outcomes.append("unavailable")


def run_threads(targets) -> None:
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)


def test_a_burst_wider_than_the_redis_pool_waits_for_connections_and_counts_exactly(redis_url):  # noqa: F811
    # redis-py's default pool refuses a call past its size (MaxConnectionsError, a 503 for the
    # request); the bounded pool makes it wait its turn.
    limiter = RedisLimiter(redis_url)
    outcomes: list[str] = []
    callers = 120  # more than the pool's connections, and than redis-py's default limit (100)
    start = threading.Barrier(callers)

    def call():
        start.wait()
        admit_all(limiter, 1, outcomes)

    try:
        run_threads([call] * callers)
    finally:
        limiter.close()
    assert callers > MAX_REDIS_CONNECTIONS and outcomes.count("unavailable") == 0
    assert outcomes.count("admitted") == RPM and len(outcomes) == callers


def test_sqlite_workers_contending_for_the_file_count_exactly(tmp_path):
    # One limiter per thread, as one per gunicorn worker: their transactions contend for the file's lock.
    limiters = [SqliteLimiter(tmp_path / "ratelimits.db") for _ in range(4)]
    outcomes: list[str] = []
    try:
        run_threads([lambda lim=lim: admit_all(lim, 30, outcomes) for lim in limiters])
    finally:
        for lim in limiters:
            lim.close()
    assert outcomes.count("admitted") == RPM and outcomes.count("unavailable") == 0 and len(outcomes) == 120


@pytest.mark.parametrize("held,admitted", [(0.05, True), (1.0, False)])
def test_sqlite_waits_for_a_held_lock_up_to_its_busy_timeout(tmp_path, held, admitted):
    limiter = SqliteLimiter(tmp_path / "ratelimits.db", busy_timeout=0.3)
    other = sqlite3.connect(tmp_path / "ratelimits.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another worker's transaction
    releaser = threading.Timer(held, lambda: other.execute("COMMIT"))
    releaser.start()
    try:
        if admitted:
            assert limiter.admit("r1", [Limit("key:k1", rpm=RPM)]).headers["x-ratelimit-remaining-requests"] == str(RPM - 1)
        else:
            with pytest.raises(LimiterUnavailable):  # fail closed: 503 rate_limits_unavailable
                limiter.admit("r1", [Limit("key:k1", rpm=RPM)])
    finally:
        releaser.join()
        other.close()
        limiter.close()
