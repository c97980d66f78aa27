"""Who a request spends for, their budgets and rate limits, and their spend in the current period.

For a request on a spending route the enforcer names every principal it may spend for (the
virtual key, every team the credential may run as, the user, the end user, the whole proxy),
reads their limits and period spend from the store (cached for `ttl` seconds; the spend this
worker's writer commits is added to the cached rows, not read again), and hands the policy
`input.facts.budgets` (the policy decides which budgets apply, and which of the teams the
request runs as). The rate limiter gets the limits of the principals the decision's subject
names (`of_subject`): a token with several teams counts against the team its request runs
as, never the others.

How stale a budget check can be: this worker counts its own spend the moment a response ends
(spend not yet written is kept aside and added); spend made through other workers and
replicas is seen once their writer has committed it (each writer flushes every
`flush_interval`, 0.2 s by default) and this worker's cached read has expired (`ttl`, 0.5 s):
at most about 0.7 s plus one batch write.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable

from regate.common.durations import Duration, parse_duration
from regate.common.errors import StoreError
from regate.compiler.model import AuthPolicy

from .claims import string_claim
from .credentials import Credential
from .spend_record import SpendRecord
from .store import GLOBAL, LIMIT_FIELDS, Store


@dataclass(frozen=True)
class Standing:
    """One principal's limits (None: not set) and its spend in its current budget period."""

    kind: str
    id: str
    max_budget_nanos: int | None
    duration: Duration | None
    tpm_limit: int | None
    rpm_limit: int | None
    max_parallel_requests: int | None
    spend_nanos: int  # in the current period, this worker's unwritten spend included
    reset_at: int | None  # epoch second the period ends; None: never

    @property
    def rate_limited(self) -> bool:
        return any(v is not None for v in (self.tpm_limit, self.rpm_limit, self.max_parallel_requests))

    def fact(self, *, with_id: bool = True) -> dict:
        doc = {"spend_nanos": self.spend_nanos, "max_budget_nanos": self.max_budget_nanos,
               "reset_at": _iso(self.reset_at) if self.reset_at is not None else None}
        if with_id:
            doc["id"] = self.id
        return doc


def _add_spend(row: dict | None, record: SpendRecord) -> dict:
    """A cached row with a committed record's spend added to its period as the store adds it
    (Store._add_totals): a later period starts afresh, an earlier one counts in the lifetime only."""
    if row is None:
        row = dict.fromkeys(LIMIT_FIELDS) | {"spend_nanos": 0, "period_start": 0, "period_spend_nanos": 0}
    duration = row["budget_duration"]
    start = parse_duration(duration).period_start(record.started_at.timestamp()) if duration else 0
    if start > row["period_start"]:
        row["period_start"], row["period_spend_nanos"] = start, record.spend_nanos
    elif start == row["period_start"]:
        row["period_spend_nanos"] += record.spend_nanos
    row["spend_nanos"] += record.spend_nanos
    return row


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def record_principals(record: SpendRecord) -> list[tuple[str, str]]:
    """The principals a spend record counts for (as the store's totals key them)."""
    pairs = [("key", record.key_hash), ("team", record.team_id), ("user", record.user_id),
             ("end_user", record.end_user_id)]
    return [(k, i) for k, i in pairs if i is not None] + [GLOBAL]


_CONFIGURABLE = ("global", "end_user")  # kinds whose budget the config may set without a row
_MAX_CACHED = 10_000  # principals; past it the cache starts afresh (entries are cheap to read again)


class Budgets:
    """Per worker: principals of a request, their standing (cached), and this worker's unwritten spend."""

    def __init__(self, store: Store, policy: AuthPolicy, *, user_id: Callable[[Credential], str | None],
                 proxy_budget: bool, end_user_default_budget: bool,
                 ttl: float = 0.5, clock: Callable[[], float] = time.time, writes: Callable[[], int] = lambda: 0):
        self._store = store
        self._policy = policy
        self._user_id = user_id  # the policy's user id of a JWT (credentials.Facts.user_id)
        self._proxy_budget = proxy_budget
        self._end_user_default = end_user_default_budget
        self._ttl = ttl
        self._clock = clock
        self._writes = writes  # the spend writer's SpendWriter.writes
        # key -> (expires, writes when read, row): the row as read plus the batches committed since.
        self._cache: dict[tuple[str, str], tuple[float, int, dict | None]] = {}
        self._pending: dict[tuple[str, str], int] = collections.defaultdict(int)
        # Appended by the spend writer's thread, drained here on the request side: no lock is shared.
        self._committed: collections.deque[tuple[int, list[SpendRecord]]] = collections.deque()

    # -- spend this worker made ------------------------------------------------

    def spent(self, record: SpendRecord) -> None:
        """A response ended: count its spend at once, until the writer has committed it."""
        if record.spend_nanos:
            for key in record_principals(record):
                self._pending[key] += record.spend_nanos

    def committed(self, records: list[SpendRecord]) -> None:
        """Called by the spend writer (any thread) once these records are in the store."""
        self._committed.append((self._writes(), records))

    def _drain_committed(self) -> None:
        """Committed spend leaves the unwritten figures and joins the cached rows read before its
        write began; a row read while it was under way may hold it or not, and is read again."""
        while self._committed:
            write, records = self._committed.popleft()
            for record in records:
                if record.spend_nanos:
                    for key in record_principals(record):
                        left = self._pending.get(key, 0) - record.spend_nanos
                        if left > 0:
                            self._pending[key] = left
                        else:
                            self._pending.pop(key, None)
                        cached = self._cache.get(key)
                        if cached is None or cached[1] > write:  # not cached, or read after the write
                            continue
                        if cached[1] == write:
                            self._cache[key] = (0.0, *cached[1:])
                        else:
                            self._cache[key] = (cached[0], cached[1], _add_spend(cached[2], record))

    # -- principals and their standing --------------------------------------------

    def principals(self, credential: Credential, team_ids: Iterable[str] = ()) -> list[tuple[str, str]]:
        """Every principal the request may spend for, as the policy derives them. `team_ids`: the
        teams the store has among those the credential may run as (facts.teams); the policy
        selects one of them, so each one's budget is reported."""
        found: list[tuple[str, str]] = []
        if credential.type == "virtual_key" and credential.key is not None:
            found.append(("key", credential.key_hash))
            user, end_user = credential.key["user_id"], None
        elif credential.type == "jwt":
            user = self._user_id(credential)
            field = self._policy.claim_field("end_user_field", credential.issuer)
            end_user = string_claim(credential.claims, field.name if field else None)
        else:
            return []
        found += [("team", team) for team in team_ids]
        found += [(kind, value) for kind, value in (("user", user), ("end_user", end_user)) if value]
        found.append(GLOBAL)
        return found

    def standing(self, principals: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Standing]:
        """Limits and current-period spend of the principals that have any limit (or a config budget)."""
        writes = self._writes()  # before the drain: every batch written before it is drained
        self._drain_committed()
        if len(self._cache) > _MAX_CACHED:
            self._cache.clear()
        now = self._clock()
        keys = list(principals)
        cache = self._cache
        missing = [k for k in keys if (entry := cache.get(k)) is None or entry[0] <= now]
        if missing:
            try:
                rows = self._store.budget_state(missing)
            except StoreError:
                if any(k not in self._cache for k in missing):
                    raise  # never read: a budget that cannot be checked is not assumed away (503)
                # The store is down: go on with the last read of each, and ask again after a ttl.
                for key in missing:
                    self._cache[key] = (now + self._ttl, *self._cache[key][1:])
            else:
                # A batch whose write began or ended meanwhile may or may not be in this read: it
                # serves this request only. (One under way all along is settled by its report.)
                expires = now + self._ttl if self._writes() == writes else 0.0
                for key in missing:
                    self._cache[key] = (expires, writes, rows.get(key))
        result = {}
        for key in keys:
            row = cache[key][2]
            # Most of a token's teams have no row: skipped here, not judged one call each.
            standing = None if row is None and key[0] not in _CONFIGURABLE else self._standing(key, row, now)
            if standing is not None:
                result[key] = standing
        return result

    def _standing(self, key: tuple[str, str], row: dict | None, now: float) -> Standing | None:
        kind, entity_id = key
        configured = (kind == "global" and self._proxy_budget) or (kind == "end_user" and self._end_user_default)
        if row is None and not configured:
            return None
        row = row or {}
        if not configured and all(row.get(name) is None for name in
                                  ("max_budget_nanos", "tpm_limit", "rpm_limit", "max_parallel_requests")):
            return None
        duration = parse_duration(row["budget_duration"]) if row.get("budget_duration") else None
        start = duration.period_start(now) if duration else 0
        spent = row.get("period_spend_nanos", 0) if row.get("period_start", 0) >= start else 0
        return Standing(
            kind, entity_id, row.get("max_budget_nanos"), duration, row.get("tpm_limit"), row.get("rpm_limit"),
            row.get("max_parallel_requests"), spent + self._pending.get(key, 0),
            duration.period_end(now) if duration else None,
        )

    def facts(self, standing: dict[tuple[str, str], Standing]) -> dict | None:
        """input.facts.budgets: the principals that have a budget (teams by id)."""
        doc: dict = {}
        for (kind, entity_id), s in standing.items():
            if kind == "global":
                if self._proxy_budget:
                    doc["proxy"] = s.fact(with_id=False)
            elif kind == "team":
                if s.max_budget_nanos is not None:
                    doc.setdefault("teams", {})[entity_id] = s.fact(with_id=False)
            elif s.max_budget_nanos is not None or (kind == "end_user" and self._end_user_default):
                doc[kind] = s.fact(with_id=kind != "key")
        return doc or None

    @staticmethod
    def of_subject(standing: dict[tuple[str, str], Standing], subject: dict) -> dict[tuple[str, str], Standing]:
        """The standing of the principals the decision's subject spends for: of the credential's
        teams only the one the request runs as (the spend record names it too)."""
        named = {"team": subject.get("team_id"), "user": subject.get("user_id"), "end_user": subject.get("end_user_id")}
        return {(kind, entity_id): s for (kind, entity_id), s in standing.items()
                if kind not in named or named[kind] == entity_id}

    def forget(self, kind: str, entity_id: str) -> None:
        """Limits changed through this worker: read them again on the next request."""
        self._cache.pop((kind, entity_id), None)
