"""Keep OPA's data.regate_state in step with the store, the source of truth for blocks.

Each enforcer follows the store's append-only block log and applies each event to
its own OPA (so a block made through any replica reaches every replica's OPA within
a poll interval), pushes its own changes at once, and re-loads the whole state when
OPA lost it (restart) — detected by the `sync_id` marker a full load writes (several
workers of one pod share an OPA: any worker's marker shows the state is there).
Until the state is loaded, the policy refuses team requests (503), never allows them.
"""

from __future__ import annotations

import logging
import threading
import uuid

from regate.errors import RegateError

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
        return isinstance(self._opa.get_state("sync_id"), str)

    def _full_load(self) -> None:
        seq, teams = self._store.blocked_teams_snapshot()
        sync_id = f"{uuid.uuid4().hex}:{seq}"
        self._opa.put_state({"blocked_teams": {t: True for t in teams}, "sync_id": sync_id})
        self._seq = seq
        self.generation += 1
        metrics.STATE_SYNCS.labels("full", "ok").inc()
        log.info("loaded %d blocked teams into OPA (block log at %d)", len(teams), seq)

    def _follow_log(self) -> None:
        while True:
            events = self._store.block_events_since(self._seq, limit=EVENT_PAGE)
            for seq, team_id, blocked in events:
                self._opa.patch_blocked(team_id, blocked)
                self._seq = seq
                self.generation += 1
                metrics.STATE_SYNCS.labels("event", "ok").inc()
            if len(events) < EVENT_PAGE:  # a full page means there may be more
                return

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                self.sync_once(tick)
            except RegateError as e:
                metrics.STATE_SYNCS.labels("loop", "error").inc()
                log.warning("blocked-team sync failed (%s): %s", e.code, e.message)
                self._seq = None  # start over with a full load once things are back
            tick += 1
            self._wake.wait(self._poll)
            self._wake.clear()
