"""Spend records and the writer that gets them into the store off the request path.

`SpendWriter.submit()` only enqueues: a background worker (a real OS thread, even under
gevent, with its own store connections: a batch never holds the worker's event loop) writes batches with
`Store.record_spend` (one transaction, idempotent by request_id) and retries with
backoff while the store is down. Nothing is lost on an outage: records that do not
fit the bounded queue, or are still unwritten at `close()`, are appended to a JSONL
spool file (fsync'd), and spool files are replayed at `start()` and whenever the
writer is idle and the store healthy.

Spool files are owned through `flock`: a writer holds an exclusive lock on its own
spool file for as long as it may append to it, so a replaying process (another
gunicorn worker sharing the spool directory) only claims files whose owner is gone
or done. A file is born under a temporary name and only renamed into view once
locked, so there is no window in which another process can claim it.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from . import metrics, os_threads
from .spend_record import SpendRecord

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

SPOOL_PREFIX = "spend-"
SPOOL_SUFFIX = ".jsonl"
CLAIMED_SUFFIX = ".claimed"
_POLL = 0.05  # seconds: longest the worker waits before looking at the stop flag again
_PUBLISH_INTERVAL = 0.1  # seconds between hand-overs of the writer's counts to Prometheus


@dataclass
class _Counters:
    written: int = 0
    retries: int = 0
    spooled: int = 0
    queue_full: int = 0
    replayed: int = 0
    spool_errors: int = 0
    corrupt_lines: int = 0


class SpendWriter:
    """Batches spend records into the store from a background OS thread; never loses one.

    The request side and the thread share only a deque (append/popleft are atomic) and real
    locks held for a few statements. Under gevent the thread's blocking store calls run on its
    own hub. Prometheus is updated from the request side (submit, stats), never the thread.
    `on_commit(records)` is called (in the thread) once queued records are in the store or the
    spool, so the budgets can stop counting them as unwritten. `writes` is odd while a batch is
    being written (from before its first attempt until after its on_commit): a store read made
    while it is even and unchanged holds exactly the batches reported before it.
    """

    def __init__(
        self,
        store: "Store",
        *,
        max_queue: int = 100_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        spool_dir: str | os.PathLike[str],
        max_backoff: float = 5.0,
        poison_attempts: int = 5,
        replay_interval: float = 5.0,
        on_commit: Callable[[list[SpendRecord]], None] | None = None,
    ):
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be at least 1")
        self._store = store
        self._queue: collections.deque[SpendRecord] = collections.deque()
        self._max_queue = max_queue
        self._on_commit = on_commit
        self._metric_events: collections.deque[tuple[str, int]] = collections.deque()
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._poison_attempts = poison_attempts
        self._replay_interval = replay_interval
        self._spool_dir = Path(spool_dir)
        self._counters = _Counters()
        self._counter_lock = os_threads.lock()
        self._spool_lock = os_threads.lock()  # guards the own spool file handle
        self._spool_file: Any = None
        self._inflight: list[SpendRecord] = []  # the batch the worker holds, for close() after a timeout
        self._inflight_lock = os_threads.lock()
        self._stopping = False
        self._deadline = float("inf")  # monotonic time after which close() wants everything spooled
        self._closed = False
        self._submit_lock = os_threads.lock()
        self._worker: os_threads.OsThread | None = None
        self._last_replay = 0.0
        self.writes = 0  # only the writing thread changes it

    # -- public interface -------------------------------------------------

    def start(self) -> None:
        """Replay spool files left by earlier processes, then start the worker."""
        if self._closed:
            raise RuntimeError("SpendWriter.start() after close()")
        if self._worker is not None:
            return
        self._spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.replay_spool()
        self._worker = os_threads.OsThread(self._run, "regate-spend-writer")  # set before it runs: _sleep reads it
        self._worker.start()
        # On the request side (a greenlet under gevent): hands the thread's counts to Prometheus.
        threading.Thread(target=self._publish_loop, name="regate-spend-metrics", daemon=True).start()

    def submit(self, record: SpendRecord) -> None:
        """Queue a record for writing. Never blocks on the store and never raises."""
        try:
            with self._submit_lock:  # pairs with close(): nothing slips into the queue after the last drain
                if not self._closed:
                    if len(self._queue) < self._max_queue:
                        self._queue.append(record)
                        return
                    self._count(queue_full=1)
            self._spool([record])
        except Exception:  # the request path must not fail because of accounting
            log.exception("spend record %s could not be queued or spooled", getattr(record, "request_id", "?"))

    def close(self, timeout: float = 10.0) -> None:
        """Flush everything; what cannot be written within `timeout` goes to the spool."""
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
        self._deadline = time.monotonic() + max(timeout, 0.0)
        self._stopping = True
        if self._worker is None:
            self._run()  # never started: flush in this thread, same rules
        else:
            # The worker spools by itself at the deadline; the margin covers one store call in flight.
            self._worker.join(timeout + 1.0)
        leftover = self._drain_queue()
        if self._worker is not None and self._worker.is_alive():
            # Worker stuck in a store call: spool what it holds too. If that call commits
            # after all, replay adds nothing: record_spend is idempotent by request_id.
            with self._inflight_lock:
                leftover = list(self._inflight) + leftover
        self._spool(leftover)
        self._close_spool_file()
        self._publish_metrics()

    def stats(self) -> dict[str, int]:
        """Counters for metrics: queued, written, retries, spooled, queue_full, replayed, ..."""
        self._publish_metrics()
        with self._counter_lock:
            data = asdict(self._counters)
        data["queued"] = len(self._queue)
        return data

    def _publish_loop(self) -> None:
        while not self._closed:
            self._publish_metrics()
            time.sleep(_PUBLISH_INTERVAL)

    def _publish_metrics(self) -> None:
        """Hand the thread's counts to Prometheus, on the request side."""
        while self._metric_events:
            name, value = self._metric_events.popleft()
            metrics.SPEND_EVENTS.labels(name).inc(value)
        metrics.SPEND_QUEUED.set(len(self._queue))

    def replay_spool(self) -> int:
        """Import every spool file no live writer owns; return how many records were imported."""
        imported = 0
        for path in self._spool_candidates():
            try:
                imported += self._replay_file(path)
            except _StoreDown:
                break  # keep the file; a later replay (or the next start) picks it up
        return imported

    # -- worker -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch:
                self._write_with_retry(batch)
                continue
            if self._stopping:
                return
            self._maybe_replay_when_idle()

    def _next_batch(self) -> list[SpendRecord]:
        """Wait for a first record, then gather more until batch_size or flush_interval.

        Waits are sliced short so close() is noticed at once whatever flush_interval is.
        """
        gather_until = time.monotonic() + self._flush_interval
        while not self._queue:
            if self._stopping or time.monotonic() >= gather_until:
                return []
            self._sleep(min(self._flush_interval, _POLL))
        gather_until = time.monotonic() + self._flush_interval
        while len(self._queue) < self._batch_size and not self._stopping and time.monotonic() < gather_until:
            self._sleep(min(gather_until - time.monotonic(), _POLL))
        batch = []
        while self._queue and len(batch) < self._batch_size:
            batch.append(self._queue.popleft())
        with self._inflight_lock:
            self._inflight = batch
        return batch

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            (os_threads.sleep if self._worker is not None else time.sleep)(seconds)

    def _write_with_retry(self, batch: list[SpendRecord]) -> None:
        self.writes += 1
        attempt = 0
        while True:
            try:
                self._store.record_spend(batch)
            except Exception as e:  # noqa: BLE001 - any failure is retried or spooled, never dropped
                attempt += 1
                self._count(retries=1)
                if self._stopping and time.monotonic() >= self._deadline:
                    self._spool(batch + self._drain_queue())
                    break
                if attempt >= self._poison_attempts and self._store_is_up():
                    # The store answers but refuses this batch: park it in the spool, keep going.
                    log.error("spend batch of %d records refused by a healthy store (%s); spooled", len(batch), _describe(e))
                    self._spool(batch)
                    break
                if attempt == 1:
                    log.warning("spend write failed, retrying with backoff: %s", _describe(e))
                self._sleep_backoff(attempt)
            else:
                self._count(written=len(batch))
                self._committed(batch)
                break
        with self._inflight_lock:
            self._inflight = []
        self.writes += 1

    def _committed(self, records: list[SpendRecord]) -> None:
        if self._on_commit is not None and records:
            try:
                self._on_commit(records)
            except Exception:  # noqa: BLE001 - accounting of the budgets must not stop the writer
                log.exception("spend commit callback failed")

    def _sleep_backoff(self, attempt: int) -> None:
        delay = min(0.05 * (2 ** min(attempt - 1, 10)), self._max_backoff)
        until = time.monotonic() + delay
        while time.monotonic() < until:  # sliced: close() cuts the wait short
            if self._stopping:
                until = min(until, time.monotonic() + 0.1, self._deadline)
            self._sleep(min(until - time.monotonic(), _POLL))

    def _store_is_up(self) -> bool:
        try:
            self._store.ping()
            return True
        except Exception:  # noqa: BLE001
            return False

    def _maybe_replay_when_idle(self) -> None:
        now = time.monotonic()
        if now - self._last_replay < self._replay_interval:
            return
        self._last_replay = now
        if not any(self._spool_candidates(include_own=True)):
            return
        self._close_spool_file()  # rotate: our own spool becomes replayable
        try:
            self.replay_spool()
        except Exception:  # noqa: BLE001 - replay is retried at the next idle moment
            log.exception("spool replay failed")

    def _drain_queue(self) -> list[SpendRecord]:
        drained = []
        while self._queue:
            drained.append(self._queue.popleft())
        return drained

    # -- spool --------------------------------------------------------------

    def _spool(self, records: list[SpendRecord]) -> None:
        if not records:
            return
        data = "".join(r.to_json() + "\n" for r in records).encode()
        with self._spool_lock:
            try:
                f = self._own_spool_file()
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                # Nowhere left to put them (disk full, read-only): count it loudly for alerting.
                self._count(spool_errors=len(records))
                log.exception("could not spool %d spend records to %s", len(records), self._spool_dir)
                return
        self._count(spooled=len(records))
        self._committed(records)  # durable: a replay writes them

    def _own_spool_file(self):
        if self._spool_file is None:
            self._spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            name = f"{SPOOL_PREFIX}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
            tmp = self._spool_dir / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # own it before anyone can see it
            os.rename(tmp, self._spool_dir / f"{name}{SPOOL_SUFFIX}")
            _fsync_dir(self._spool_dir)
            self._spool_file = os.fdopen(fd, "ab")
        return self._spool_file

    def _close_spool_file(self) -> None:
        with self._spool_lock:
            if self._spool_file is not None:
                self._spool_file.close()  # releases the flock
                self._spool_file = None

    def _spool_candidates(self, include_own: bool = False) -> Iterable[Path]:
        if not self._spool_dir.is_dir():
            return []
        own = None
        if not include_own:
            with self._spool_lock:
                if self._spool_file is not None:
                    own = os.fstat(self._spool_file.fileno()).st_ino
        found = []
        for path in sorted(self._spool_dir.iterdir()):
            if not path.name.startswith(SPOOL_PREFIX):
                continue
            if not (path.name.endswith(SPOOL_SUFFIX) or CLAIMED_SUFFIX in path.name):
                continue
            try:
                if own is not None and path.stat().st_ino == own:
                    continue
            except FileNotFoundError:
                continue
            found.append(path)
        return found

    def _replay_file(self, path: Path) -> int:
        """Claim (lock + atomic rename), import, then delete one spool file."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0  # claimed by someone else meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live writer or replayer owns it
            # The name may have changed between open and lock (another replayer claimed and
            # finished it): only go on if this path still names the inode we locked.
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    return 0
            except FileNotFoundError:
                return 0
            claimed = path
            if CLAIMED_SUFFIX not in path.name:
                claimed = path.with_name(f"{path.name}{CLAIMED_SUFFIX}-{os.getpid()}-{secrets.token_hex(4)}")
                os.rename(path, claimed)
            with os.fdopen(os.dup(fd), "rb") as f:
                records = self._parse_spool(f.read(), claimed)
            for start in range(0, len(records), self._batch_size):
                try:
                    self._store.record_spend(records[start : start + self._batch_size])
                except Exception as e:  # noqa: BLE001
                    log.warning("spool replay of %s stopped, store failed: %s", claimed.name, _describe(e))
                    raise _StoreDown() from None
            os.unlink(claimed)
            _fsync_dir(self._spool_dir)
            self._count(replayed=len(records))
            if records:
                log.info("replayed %d spooled spend records from %s", len(records), claimed.name)
            return len(records)
        finally:
            os.close(fd)

    def _parse_spool(self, data: bytes, path: Path) -> list[SpendRecord]:
        records = []
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(SpendRecord.from_json(line))
            except (ValueError, TypeError):
                # A torn last line from a crash mid-write; it was never acknowledged as durable.
                self._count(corrupt_lines=1)
                log.error("skipping unreadable line %d of spool file %s", number, path.name)
        return records

    def _count(self, **increments: int) -> None:
        with self._counter_lock:
            for name, value in increments.items():
                setattr(self._counters, name, getattr(self._counters, name) + value)
        self._metric_events.extend(increments.items())  # the same counts for Prometheus (queue_full is the alert)


class _StoreDown(Exception):
    """Internal: replay stopped because the store failed."""


def _describe(error: BaseException) -> str:
    code = getattr(error, "code", None)
    return f"{type(error).__name__}({code}): {error}" if code else f"{type(error).__name__}: {error}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
