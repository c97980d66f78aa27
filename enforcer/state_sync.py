"""Keep OPA's data.regate_state in step with the store, the source of truth for blocks.

Each enforcer follows the store's append-only block log and applies each event to
its own OPA (so a block made through any replica reaches every replica's OPA within
a poll interval), pushes its own changes at once, and re-loads the whole state when
OPA lost it (restart) — detected by the `sync_id` marker a full load writes (several
workers of one pod share an OPA: any worker's marker shows the state is there).
Until the state is loaded, the policy refuses team requests (503), never allows them.

The workers of a pod share one OPA, so a full load must never overwrite a newer state
with an older snapshot (a sibling's block pushed in between would be undone until the
next poll). A full load therefore only creates the state when OPA has none (atomic in
OPA); when it is there, the worker takes the block-log position from its `sync_id`
(`<nonce>:<seq>`) and replays the events after it. Replays apply each team's latest
event only, so catching up never passes through an older state of a team.
"""

from __future__ import annotations

import logging
import threading
import traceback
import uuid

from regate.common.errors import RegateError

from . import metrics
from .decisions import OpaClient
from .store import Store

log = logging.getLogger("regate.state")
EVENT_PAGE = 10_000


class BlockSync:
    def __init__(self, store: Store, opa: OpaClient, *, poll_interval: float = 0.5, check_interval: float = 2.0):
        self._store = store
        self._opa = opa
        self._poll = poll_interval
        self._check_every = max(1, round(check_interval / poll_interval))
        self._seq: int | None = None  # last block event applied to OPA; None = needs a full load
        self.generation = 0  # bumped whenever OPA's state may have changed (the decision cache's key)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def loaded(self) -> bool:
        return self._seq is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="regate-block-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)

    def request_full_sync(self) -> None:
        """Called when a decision said the state is missing: re-load now, not at the next check."""
        self._seq = None
        self.generation += 1
        self._wake.set()

    def pushed(self, team_id: str, blocked: bool) -> None:
        """A block/unblock just committed through this replica: apply it to OPA before answering."""
        try:
            self._opa.patch_blocked(team_id, blocked)
            self.generation += 1
            metrics.STATE_SYNCS.labels("push", "ok").inc()
        except RegateError as e:
            metrics.STATE_SYNCS.labels("push", "error").inc()
            log.warning("could not push block of a team to OPA (%s); the sync loop will retry", e.code)
            self.request_full_sync()

    def sync_once(self, tick: int = 0) -> None:
        with self._lock:
            if self._seq is not None and tick % self._check_every == 0 and not self._opa_has_state():
                log.warning("OPA lost the blocked-team state (restart?); re-loading it")
                self._seq = None
            if self._seq is None:
                self._full_load()
            else:
                self._follow_log()

    def _opa_has_state(self) -> bool:
        # Any full load's marker will do: the workers of one pod share their OPA, and each
        # re-loading whenever another one had loaded last would keep them re-loading forever.
        present = isinstance(self._opa.get_state("sync_id"), str)
        metrics.STATE_SYNCS.labels("check", "ok" if present else "lost").inc()
        return present

    def _full_load(self) -> None:
        seq, teams = self._store.blocked_teams_snapshot()
        state = {"blocked_teams": {t: True for t in teams}, "sync_id": f"{uuid.uuid4().hex}:{seq}"}
        if self._opa.put_state(state, only_if_absent=True):
            log.info("loaded %d blocked teams into OPA (block log at %d)", len(teams), seq)
        else:
            loaded_at = _log_position(self._opa.get_state("sync_id"))
            if loaded_at is not None and self._in_log(loaded_at, seq):
                seq = loaded_at  # loaded by another worker of this pod: catch up from its position
            else:  # no marker, or one from another block log (a replaced database): start over
                self._opa.put_state(state)
                log.info("replaced OPA's blocked-team state: %d teams (block log at %d)", len(teams), seq)
        self._seq = seq
        self.generation += 1
        metrics.STATE_SYNCS.labels("full", "ok").inc()
        self._follow_log()  # at once: events committed since the snapshot must not wait a poll

    def _in_log(self, position: int, snapshot_seq: int) -> bool:
        """Whether `position` is a point of this store's block log (a sibling's snapshot may be newer than ours)."""
        if position <= snapshot_seq:
            return True
        events = self._store.block_events_since(position - 1, limit=1)
        return bool(events) and events[0][0] == position

    def _follow_log(self) -> None:
        while True:
            events = self._store.block_events_since(self._seq, limit=EVENT_PAGE)
            latest = {team_id: blocked for _, team_id, blocked in events}  # later events win
            for team_id, blocked in latest.items():
                self._opa.patch_blocked(team_id, blocked)
                metrics.STATE_SYNCS.labels("event", "ok").inc()
            if events:
                self._seq = events[-1][0]
                self.generation += 1
            if len(events) < EVENT_PAGE:  # a full page means there may be more
                return

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                self.sync_once(tick)
            except Exception as e:  # noqa: BLE001 - a dead loop would leave the state unloaded for good (503)
                metrics.STATE_SYNCS.labels("loop", "error").inc()
                if isinstance(e, RegateError):
                    log.warning("blocked-team sync failed (%s): %s", e.code, e.message)
                else:  # the type and where it was raised, not the message: a driver's may carry a URL
                    where = traceback.extract_tb(e.__traceback__)[-1]
                    log.error("blocked-team sync failed unexpectedly (%s at %s:%s); retrying", type(e).__name__,
                              where.filename, where.lineno)
                self._seq = None  # start over with a full load once things are back
            tick += 1
            self._wake.wait(self._poll)
            self._wake.clear()


def _log_position(sync_id) -> int | None:
    """The block-log sequence number a full load's `sync_id` marker names, else None."""
    if not isinstance(sync_id, str):
        return None
    _, _, seq = sync_id.rpartition(":")
    return int(seq) if seq.isdigit() else None
