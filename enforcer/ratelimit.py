"""Rate limits (rpm, tpm, max_parallel_requests), counted exactly across workers and replicas.

Semantics, as LiteLLM's limiter: fixed one-minute windows aligned to the minute. A request is
admitted when, for every limited principal it spends for, the requests admitted in this
minute are below `rpm_limit`, the tokens used in this minute are below `tpm_limit` (tokens are
only known afterwards: a response adds its real usage when it ends) and the requests in
flight are below `max_parallel_requests`. Admission checks and counts in one atomic step, so
exactly `rpm_limit` requests pass however many arrive at once.

Two backends: Redis (`REDIS_URL`, or router_settings.redis_*), shared by every replica, each
step one Lua script (atomic on the server; the minute is read from the server's clock, so
replicas agree on it); without Redis, an SQLite file in the data directory shared by the
host's gunicorn workers, each step one `BEGIN IMMEDIATE` transaction (SQLite's file lock
serialises the workers). A request in flight holds a lease that its stream renews, so a
worker that dies mid-request frees its slots after `LEASE_SECONDS`.

Failure: a backend that cannot answer raises LimiterUnavailable (503) — only requests with a
limit ever ask it, so unlimited principals are unaffected.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from regate.common.errors import RegateError

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
LEASE_SECONDS = 300  # a request in flight counts this long unless renewed (its stream renews it)
RENEW_AFTER = 60
MAX_REDIS_CONNECTIONS = 32  # per worker; a call holds one for a round trip of microseconds


@dataclass(frozen=True)
class Limit:
    """One principal's rate limits; `name` is its counter name (kind:id)."""

    name: str
    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None


@dataclass
class Admission:
    """An admitted request: what it holds and the headers that report the remaining limits."""

    request_id: str
    limits: tuple[Limit, ...]
    headers: dict[str, str] = field(default_factory=dict)
    renewed_at: float = field(default_factory=time.monotonic)


class RateLimited(RegateError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, headers: dict[str, str]):
        super().__init__(message)
        self.headers = headers


class LimiterUnavailable(RegateError):
    code = "rate_limits_unavailable"
    status = 503


@dataclass(frozen=True)
class _Counts:
    requests: int
    tokens: int
    in_flight: int


def _headers(limits, counts, retry_after: float | None = None) -> dict[str, str]:
    """x-ratelimit-* of the tightest limit of each kind (LiteLLM's names), and Retry-After."""
    headers = {}
    for kind, attr, used in (("requests", "rpm", "requests"), ("tokens", "tpm", "tokens")):
        pairs = [(getattr(lim, attr), getattr(c, used)) for lim, c in zip(limits, counts) if getattr(lim, attr) is not None]
        if pairs:
            limit, used_now = min(pairs, key=lambda p: p[0] - p[1])
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(limit - used_now, 0))
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return headers


def _refusal(limit: Limit, kind: str, counts: _Counts, reset: float, limits, all_counts) -> RateLimited:
    value = {"requests": limit.rpm, "tokens": limit.tpm, "max_parallel_requests": limit.parallel}[kind]
    used = {"requests": counts.requests, "tokens": counts.tokens, "max_parallel_requests": counts.in_flight}[kind]
    what = {"requests": "requests per minute", "tokens": "tokens per minute",
            "max_parallel_requests": "parallel requests"}[kind]
    who = limit.name.split(":", 1)[0].replace("_", " ")
    retry = 1 if kind == "max_parallel_requests" else reset
    message = (f"Rate limit exceeded for this {who}: {used} {what} of {value} allowed"
               + ("" if kind == "max_parallel_requests" else f"; the window resets in {max(1, math.ceil(reset))}s"))
    return RateLimited(message, _headers(limits, all_counts, retry))


class PendingAdmission:
    """An admission asked for and not yet read (RateLimiter.begin). `result()` reads it, once;
    a request that ends without reading it (refused before the upstream) calls `abandon()`,
    which reads it and frees what it holds."""

    def __init__(self, limiter: RateLimiter, answer: Callable[[], Admission]):
        self._limiter = limiter
        self._answer = answer
        self._read = False

    def result(self) -> Admission:
        """The admission, or RateLimited / LimiterUnavailable."""
        self._read = True
        return self._answer()

    def abandon(self) -> None:
        if self._read:
            return
        try:
            self._limiter.release(self.result(), 0)
        except RegateError:  # refused, or the counters are out of reach: nothing held, or leases that expire
            pass


def _settled(limiter: RateLimiter, admission: Admission | None = None, error: RegateError | None = None):
    """A PendingAdmission whose answer is known already."""
    def answer() -> Admission:
        if error is not None:
            raise error
        return admission

    return PendingAdmission(limiter, answer)


class RateLimiter:
    """begin() (or admit()) before the upstream is called, release() when the response has ended."""

    def begin(self, request_id: str, limits: list[Limit]) -> PendingAdmission:
        """Ask for an admission now and read it later: a backend over the network sends the
        question at once, so what the request does until `result()` overlaps the round trip."""
        try:
            return _settled(self, self.admit(request_id, limits))
        except RegateError as e:
            return _settled(self, error=e)

    def admit(self, request_id: str, limits: list[Limit]) -> Admission:
        raise NotImplementedError

    def release(self, admission: Admission, tokens: int) -> None:
        """Add the response's tokens and free its parallel slots. Without a tpm or parallel limit
        there is nothing to undo (requests count at admission): no round trip to the counters."""
        if any(lim.tpm is not None or lim.parallel is not None for lim in admission.limits):
            self._release(admission, tokens)

    def _release(self, admission: Admission, tokens: int) -> None:
        raise NotImplementedError

    def renew(self, admission: Admission) -> None:
        """Extend the leases of a long request (called as its stream goes on)."""
        if time.monotonic() - admission.renewed_at >= RENEW_AFTER:
            admission.renewed_at = time.monotonic()
            try:
                self._renew(admission)
            except LimiterUnavailable as e:  # the stream goes on; its lease may lapse early
                log.warning("rate-limit lease of %s not renewed: %s", admission.request_id, e.message)

    def _renew(self, admission: Admission) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


# -- Redis -------------------------------------------------------------------------------

_PREFIX = "regate:rl:"

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = math.floor(now / 60)
local reset = tostring((window + 1) * 60 - now)
local lease = tonumber(ARGV[2])
local counts = {}
for i = 1, #KEYS do
  local base = KEYS[i]
  local rpm, tpm, par = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local req = tonumber(redis.call('GET', base .. ':r:' .. window) or '0')
  local tok = tonumber(redis.call('GET', base .. ':t:' .. window) or '0')
  local inflight = 0
  if par >= 0 then
    redis.call('ZREMRANGEBYSCORE', base .. ':p', '-inf', now)
    inflight = redis.call('ZCARD', base .. ':p')
  end
  counts[i] = {req, tok, inflight}
  local refused = nil
  if rpm >= 0 and req >= rpm then refused = 'requests'
  elseif tpm >= 0 and tok >= tpm then refused = 'tokens'
  elseif par >= 0 and inflight >= par then refused = 'max_parallel_requests' end
  if refused then
    local out = {0, i, refused, reset}
    for j = 1, i do for k = 1, 3 do table.insert(out, counts[j][k]) end end
    return out
  end
end
local out = {1, 0, '', reset}
for i = 1, #KEYS do
  local base = KEYS[i]
  local rpm, par = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 2])
  if rpm >= 0 then
    counts[i][1] = redis.call('INCR', base .. ':r:' .. window)
    redis.call('EXPIRE', base .. ':r:' .. window, 120)
  end
  if par >= 0 then
    redis.call('ZADD', base .. ':p', now + lease, ARGV[1])
    redis.call('EXPIRE', base .. ':p', lease * 2)
    counts[i][3] = counts[i][3] + 1
  end
  for k = 1, 3 do table.insert(out, counts[i][k]) end
end
return out
"""

_RELEASE = """
local t = redis.call('TIME')
local window = math.floor((tonumber(t[1]) + tonumber(t[2]) / 1000000) / 60)
local tokens = tonumber(ARGV[2])
for i = 1, #KEYS do
  local base = KEYS[i]
  if tonumber(ARGV[1 + 2 * i]) >= 0 and tokens > 0 then
    redis.call('INCRBY', base .. ':t:' .. window, tokens)
    redis.call('EXPIRE', base .. ':t:' .. window, 120)
  end
  if tonumber(ARGV[2 + 2 * i]) >= 0 then redis.call('ZREM', base .. ':p', ARGV[1]) end
end
return 1
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do redis.call('ZADD', KEYS[i] .. ':p', 'XX', now + tonumber(ARGV[2]), ARGV[1]) end
return 1
"""


def _n(value: int | None) -> int:
    return -1 if value is None else value


def _unavailable(error: Exception) -> LimiterUnavailable:
    # The message names the host, never the password (redis-py does not print it).
    return LimiterUnavailable(f"rate limits cannot be checked: Redis did not answer ({type(error).__name__})")


def _command(*args: str | int) -> bytes:
    """The RESP array of bulk strings redis-py's packer writes for these arguments, built in one
    join (its packer, per argument an encoder call and a concatenation, cost ≈ 55 µs a script)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Script:
    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisLimiter(RateLimiter):
    """Counters in Redis, shared by every replica.

    Each step is one command on a connection of redis-py's pool, which connects, authenticates
    and replaces a connection that dropped while idle; not through redis-py's client, whose
    per-command layers (retries, observability hooks, Script objects) cost more CPU than the
    command. Nothing is retried: an admission may have counted before its answer was lost.
    """

    def __init__(self, url: str, *, timeout: float = 2.0, connect_timeout: float = 0.5):
        import redis
        from redis.exceptions import NoScriptError

        self._errors = (redis.RedisError, OSError)
        self._no_script = NoScriptError
        # A busy worker reads a prompt answer late: the read timeout is generous, the connect one short.
        # Each greenlet waiting for an answer holds a connection: a bounded pool where a burst waits
        # its turn (up to `timeout`), not redis-py's default that refuses the 101st (a 503 per request).
        self._pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_REDIS_CONNECTIONS, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=connect_timeout, health_check_interval=30)
        self._admit_script = _Script(_ADMIT)
        self._release_script = _Script(_RELEASE)
        self._renew_script = _Script(_RENEW)

    def _send(self, script: _Script, keys, args) -> Callable[[], Any]:
        """Send the script; the callable returned reads its answer (and must be called: it gives
        the connection back to the pool)."""
        try:
            connection = self._pool.get_connection()
        except self._errors as e:
            raise _unavailable(e) from None
        try:
            connection.send_packed_command([_command("EVALSHA", script.sha, len(keys), *keys, *args)])
        except self._errors as e:
            self._pool.release(connection)  # a connection that failed mid-command is closed by now
            raise _unavailable(e) from None

        def answer():
            try:
                try:
                    return connection.read_response()
                except self._no_script:  # Redis restarted or flushed its scripts: EVAL caches it again
                    connection.send_packed_command([_command("EVAL", script.source, len(keys), *keys, *args)])
                    return connection.read_response()
            except self._errors as e:
                raise _unavailable(e) from None
            finally:
                self._pool.release(connection)

        return answer

    def _call(self, script: _Script, keys, args):
        return self._send(script, keys, args)()

    def begin(self, request_id: str, limits: list[Limit]) -> PendingAdmission:
        keys = [_PREFIX + lim.name for lim in limits]
        args: list = [request_id, LEASE_SECONDS]
        for lim in limits:
            args += [_n(lim.rpm), _n(lim.tpm), _n(lim.parallel)]
        try:
            reply = self._send(self._admit_script, keys, args)
        except LimiterUnavailable as e:
            return _settled(self, error=e)
        return PendingAdmission(self, lambda: self._admission(request_id, limits, reply()))

    def admit(self, request_id: str, limits: list[Limit]) -> Admission:
        return self.begin(request_id, limits).result()

    @staticmethod
    def _admission(request_id: str, limits: list[Limit], reply) -> Admission:
        admitted, index, kind, reset = int(reply[0]), int(reply[1]), reply[2], float(reply[3])
        flat = [int(v) for v in reply[4:]]
        counts = [_Counts(*flat[i:i + 3]) for i in range(0, len(flat), 3)]
        if not admitted:
            kind = kind.decode() if isinstance(kind, bytes) else kind
            raise _refusal(limits[index - 1], kind, counts[index - 1], reset, limits[:index], counts)
        return Admission(request_id, tuple(limits), _headers(limits, counts))

    def _release(self, admission: Admission, tokens: int) -> None:
        keys = [_PREFIX + lim.name for lim in admission.limits]
        args: list = [admission.request_id, tokens]
        for lim in admission.limits:
            args += [_n(lim.tpm), _n(lim.parallel)]
        self._call(self._release_script, keys, args)

    def _renew(self, admission: Admission) -> None:
        keys = [_PREFIX + lim.name for lim in admission.limits if lim.parallel is not None]
        if keys:
            self._call(self._renew_script, keys, [admission.request_id, LEASE_SECONDS])

    def close(self) -> None:
        self._pool.disconnect()


# -- one host: SQLite ------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (name TEXT, window INTEGER, requests INTEGER NOT NULL, tokens INTEGER NOT NULL,
                                     PRIMARY KEY (name, window)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS in_flight (name TEXT, request_id TEXT, expires REAL NOT NULL,
                                      PRIMARY KEY (name, request_id)) WITHOUT ROWID;
"""


_FIRST_PAUSE = 0.0002  # seconds; a transaction here takes tens of microseconds
_LONGEST_PAUSE = 0.005


def _locked(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) \
        or "locked" in str(error)


class SqliteLimiter(RateLimiter):
    """Counters in an SQLite file shared by one host's workers (not by other hosts: use Redis there).

    Each step is one BEGIN IMMEDIATE transaction: SQLite's write lock on the file makes it
    atomic across processes. The transaction makes no gevent switch (no socket I/O), so one
    connection per worker serves all its greenlets. A worker that finds the lock taken waits
    with time.sleep, which gevent makes a switch: SQLite's own busy handler would sleep in C
    (1, 2, 5, 10 ms, ...) and stall every request of the worker meanwhile.
    """

    def __init__(self, path: str | os.PathLike[str], *, clock=time.time, busy_timeout: float = 5.0):
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._busy_timeout = busy_timeout
        try:
            self._db = sqlite3.connect(str(self._path), timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")  # counters, not records: losing the last ones in a crash is fine
            self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA busy_timeout = 0")  # from now on _begin waits, cooperatively
        except sqlite3.Error as e:
            raise LimiterUnavailable(f"rate limits cannot be checked: {self._path} is not usable ({e})") from None
        self._last_sweep = 0

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, waiting for another worker's transaction (short: no I/O in any)."""
        deadline = time.monotonic() + self._busy_timeout
        pause = _FIRST_PAUSE
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if not _locked(e) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)

    def _tx(self, step):
        try:
            self._begin()
            try:
                result = step(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result
        except sqlite3.Error as e:
            raise LimiterUnavailable(f"rate limits cannot be checked: {e}") from None

    def admit(self, request_id: str, limits: list[Limit]) -> Admission:
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        reset = (window + 1) * WINDOW_SECONDS - now

        def step(db):
            if window != self._last_sweep:
                db.execute("DELETE FROM counters WHERE window < ?", (window - 1,))
                self._last_sweep = window
            counts = []
            for lim in limits:
                row = db.execute("SELECT requests, tokens FROM counters WHERE name = ? AND window = ?",
                                 (lim.name, window)).fetchone() or (0, 0)
                in_flight = 0
                if lim.parallel is not None:
                    db.execute("DELETE FROM in_flight WHERE name = ? AND expires < ?", (lim.name, now))
                    in_flight = db.execute("SELECT count(*) FROM in_flight WHERE name = ?", (lim.name,)).fetchone()[0]
                c = _Counts(row[0], row[1], in_flight)
                counts.append(c)
                for kind, limit, used in (("requests", lim.rpm, c.requests), ("tokens", lim.tpm, c.tokens),
                                          ("max_parallel_requests", lim.parallel, c.in_flight)):
                    if limit is not None and used >= limit:
                        return _refusal(lim, kind, c, reset, limits[:len(counts)], counts)
            for i, lim in enumerate(limits):
                c = counts[i]
                if lim.rpm is not None:
                    db.execute("INSERT INTO counters (name, window, requests, tokens) VALUES (?, ?, 1, 0) "
                               "ON CONFLICT (name, window) DO UPDATE SET requests = requests + 1", (lim.name, window))
                if lim.parallel is not None:
                    db.execute("INSERT OR REPLACE INTO in_flight (name, request_id, expires) VALUES (?, ?, ?)",
                               (lim.name, request_id, now + LEASE_SECONDS))
                counts[i] = _Counts(c.requests + (lim.rpm is not None), c.tokens, c.in_flight + (lim.parallel is not None))
            return Admission(request_id, tuple(limits), _headers(limits, counts))

        result = self._tx(step)
        if isinstance(result, RateLimited):
            raise result
        return result

    def _release(self, admission: Admission, tokens: int) -> None:
        window = int(self._clock() // WINDOW_SECONDS)

        def step(db):
            for lim in admission.limits:
                if lim.tpm is not None and tokens > 0:
                    db.execute("INSERT INTO counters (name, window, requests, tokens) VALUES (?, ?, 0, ?) "
                               "ON CONFLICT (name, window) DO UPDATE SET tokens = tokens + excluded.tokens",
                               (lim.name, window, tokens))
                if lim.parallel is not None:
                    db.execute("DELETE FROM in_flight WHERE name = ? AND request_id = ?", (lim.name, admission.request_id))

        self._tx(step)

    def _renew(self, admission: Admission) -> None:
        expires = self._clock() + LEASE_SECONDS
        self._tx(lambda db: [db.execute("UPDATE in_flight SET expires = ? WHERE name = ? AND request_id = ?",
                                        (expires, lim.name, admission.request_id))
                             for lim in admission.limits if lim.parallel is not None])

    def close(self) -> None:
        self._db.close()


def limits_of(standing) -> list[Limit]:
    """The rate limits of the principals that have any, as counter names."""
    return [Limit(f"{s.kind}:{s.id}" if s.id else s.kind, s.rpm_limit, s.tpm_limit, s.max_parallel_requests)
            for s in standing.values() if s.rate_limited]
