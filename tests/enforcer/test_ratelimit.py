"""enforcer.ratelimit's counters under contention: Redis (a real server) and the host's SQLite file."""

from __future__ import annotations

import sqlite3
import threading
import uuid

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from regate.enforcer.ratelimit import (
    LEASE_SECONDS,
    MAX_REDIS_CONNECTIONS,
    RENEW_AFTER,
    Limit,
    LimiterUnavailable,
    RateLimited,
    RedisLimiter,
    SqliteLimiter,
    _command,
)
from tests.support.properties import bounded
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


def script_calls(url: str) -> int:
    """Lua scripts Redis has run since its start (EVALSHA and EVAL; not an EVALSHA refused with
    NOSCRIPT, which loads the script)."""
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    counts = [stats.get(f"cmdstat_{name}", {}) for name in ("evalsha", "eval")]
    return sum(c.get("calls", 0) - c.get("failed_calls", 0) for c in counts)


def test_a_release_goes_to_redis_only_when_it_has_something_to_undo(redis_url):  # noqa: F811
    """Requests count at admission: a call limited by rpm alone has nothing to release, and makes one
    round trip; a tpm limit (tokens to add) or max_parallel_requests (a slot to free) makes two."""
    limiter = RedisLimiter(redis_url)
    try:
        before = script_calls(redis_url)
        limiter.release(limiter.admit("r1", [Limit("key:rpm", rpm=5)]), 10)
        assert script_calls(redis_url) - before == 1
        for i, limit in enumerate([Limit("key:tpm", rpm=5, tpm=10), Limit("key:par", parallel=1)]):
            before = script_calls(redis_url)
            limiter.release(limiter.admit(f"r{i}", [Limit("key:rpm", rpm=5), limit]), 10)
            assert script_calls(redis_url) - before == 2
        with pytest.raises(RateLimited, match="10 tokens per minute of 10 allowed"):  # the tokens were added
            limiter.admit("r3", [Limit("key:tpm", tpm=10)])
        limiter.admit("r4", [Limit("key:par", parallel=1)])  # the slot was freed
    finally:
        limiter.close()


def test_sqlite_releases_only_what_has_something_to_undo(tmp_path):
    """The same on the host's file: an rpm-only release takes no transaction (so it needs no lock)."""
    limiter = SqliteLimiter(tmp_path / "ratelimits.db", busy_timeout=0.1)
    other = sqlite3.connect(tmp_path / "ratelimits.db", isolation_level=None, check_same_thread=False)
    try:
        rpm_only = limiter.admit("r1", [Limit("key:k1", rpm=RPM)])
        parallel = limiter.admit("r2", [Limit("key:k1", rpm=RPM), Limit("key:k2", parallel=1)])
        other.execute("BEGIN IMMEDIATE")  # another worker holds the file's lock throughout
        limiter.release(rpm_only, 10)
        with pytest.raises(LimiterUnavailable):
            limiter.release(parallel, 10)
        other.execute("COMMIT")
        limiter.release(parallel, 10)
        limiter.admit("r3", [Limit("key:k2", parallel=1)])  # the slot was freed
    finally:
        other.close()
        limiter.close()


def test_redis_that_lost_its_scripts_is_given_them_again(redis_url):  # noqa: F811
    """A restarted Redis (here: SCRIPT FLUSH) answers EVALSHA with NOSCRIPT: the same call sends the
    script itself, and the counts go on."""
    limiter = RedisLimiter(redis_url)
    try:
        limiter.admit("r1", [Limit("key:k1", rpm=2)])
        with redis.Redis.from_url(redis_url) as client:
            client.script_flush()
        assert limiter.admit("r2", [Limit("key:k1", rpm=2)]).headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(RateLimited):
            limiter.admit("r3", [Limit("key:k1", rpm=2)])
    finally:
        limiter.close()


@pytest.fixture(params=["redis", "sqlite"])
def limiter(request, tmp_path):
    made = (RedisLimiter(request.getfixturevalue("redis_url")) if request.param == "redis"
            else SqliteLimiter(tmp_path / "ratelimits.db"))
    yield made
    made.close()


def test_an_admission_begun_counts_before_it_is_read(limiter):
    """The gate begins the admission and the proxy reads it later: the slot is held from the start."""
    name = f"key:{uuid.uuid4().hex}"
    pending = limiter.begin("r1", [Limit(name, parallel=1)])
    assert pending.result().headers == {}
    with pytest.raises(RateLimited, match="1 parallel requests of 1 allowed"):
        limiter.begin("r2", [Limit(name, parallel=1)]).result()
    pending.abandon()  # read already: the proxy owns the admission, nothing is released here
    with pytest.raises(RateLimited):
        limiter.admit("r3", [Limit(name, parallel=1)])


def test_an_admission_never_read_is_released_when_abandoned(limiter):
    """A request refused between the gate and the proxy frees what its admission holds."""
    name = f"key:{uuid.uuid4().hex}"
    limiter.begin("r1", [Limit(name, rpm=5, parallel=1)]).abandon()
    admission = limiter.admit("r2", [Limit(name, rpm=5, parallel=1)])  # the slot is free again
    assert admission.headers["x-ratelimit-remaining-requests"] == "3"  # a request counts at admission
    refused = limiter.begin("r3", [Limit(name, rpm=5, parallel=1)])
    refused.abandon()  # refused: nothing held, nothing raised
    with pytest.raises(RateLimited):
        limiter.admit("r4", [Limit(name, parallel=1)])  # r2 still holds its slot


def test_a_renewed_lease_holds_its_slot_past_the_first_lease(tmp_path):
    """A long stream (or its drain after the client left) renews its lease: its parallel slot is
    not freed while the upstream still works on it, and is once the renewed lease is over."""
    now = [1_000.0]
    limiter = SqliteLimiter(tmp_path / "ratelimits.db", clock=lambda: now[0])
    limits = [Limit(f"key:{uuid.uuid4().hex}", parallel=1)]
    admission = limiter.admit("r1", limits)
    now[0] += LEASE_SECONDS - 1
    limiter.renew(admission)  # renewed less than RENEW_AFTER ago (at admission): nothing to do yet
    admission.renewed_at -= RENEW_AFTER
    limiter.renew(admission)
    now[0] += 2  # the first lease is over, the renewed one is not
    with pytest.raises(RateLimited):
        limiter.admit("r2", limits)
    now[0] += LEASE_SECONDS
    limiter.admit("r3", limits)
    limiter.close()


def test_a_redis_renewal_moves_the_lease_on(redis_url):  # noqa: F811
    limiter = RedisLimiter(redis_url)
    name = f"key:{uuid.uuid4().hex}"
    admission = limiter.admit("r1", [Limit(name, parallel=1)])
    counters = redis.Redis.from_url(redis_url)
    leased_until = counters.zscore(f"regate:rl:{name}:p", "r1")
    admission.renewed_at -= RENEW_AFTER
    limiter.renew(admission)
    assert counters.zscore(f"regate:rl:{name}:p", "r1") > leased_until
    counters.close()
    limiter.close()


def test_redis_out_of_reach_is_a_503_when_the_admission_is_read(redis_url):  # noqa: F811
    limiter = RedisLimiter(redis_url.rsplit(":", 1)[0] + ":1/0", connect_timeout=0.2)
    try:
        pending = limiter.begin("r1", [Limit("key:k1", rpm=5)])
        with pytest.raises(LimiterUnavailable, match="Redis did not answer"):
            pending.result()
        limiter.begin("r2", [Limit("key:k1", rpm=5)]).abandon()  # nothing raised
    finally:
        limiter.close()


# Text a team id or key name may hold (no lone surrogates: tokens and the store refuse them).
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@bounded(300)
@given(st.lists(st.one_of(_TEXT, st.integers(-2**63, 2**63)), max_size=12), st.integers(0, 3))
def test_a_command_is_packed_as_redis_py_packs_it(args, cutoff_exponent):
    # Small cutoffs make redis-py split its output into chunks: joined, the bytes must be the same.
    reference = PythonRespSerializer(10 ** (cutoff_exponent + 1), Encoder("utf-8", "strict", False).encode)
    assert _command("EVALSHA", *args) == b"".join(reference.pack("EVALSHA", *args))
