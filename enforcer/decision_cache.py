"""Recent OPA decisions, so a caller repeating the same request skips the round trip to OPA.

The key is the exact input OPA would see (claims, path, method, model, facts) plus the
blocked-team state generation: a block applied to this worker's OPA bumps the generation,
so no cached allow outlives it. The TTL (0.5 s by default) bounds how long a new policy
revision takes to show. Errors are never cached (a failure to decide is never remembered),
nor decisions that upsert a user or a team (the next request's facts differ anyway), nor
refusals of requests without a credential (anyone can send any number of them).

What the cache holds is bounded in entries and in bytes (the encoded inputs, whose
client-chosen parts the gate bounds too: path, model name); expired entries leave at once.
"""

from __future__ import annotations

import time
from typing import Callable

from . import metrics
from .decisions import Decision, OpaClient, encode_input
from .ttl_cache import TtlCache

ENTRY_OVERHEAD = 400  # bytes a cached decision costs beside its key: the tuple, the Decision, the dict slot


class DecisionCache:
    def __init__(self, opa: OpaClient, *, ttl: float, generation: Callable[[], int], maxsize: int = 4096,
                 max_bytes: int = 8 * 1024 * 1024, clock: Callable[[], float] = time.monotonic):
        self._opa = opa
        self._generation = generation
        self._cache = TtlCache(ttl, maxsize=maxsize, clock=clock, max_bytes=max_bytes,
                               size_of=lambda key, _: len(key[1]) + ENTRY_OVERHEAD) if ttl > 0 else None

    @property
    def entries(self) -> int:
        return len(self._cache) if self._cache is not None else 0

    @property
    def weight(self) -> int:
        return self._cache.weight if self._cache is not None else 0

    def decide(self, input_doc: dict) -> Decision:
        body = encode_input(input_doc)
        if self._cache is None:
            return self._ask(body)
        # The generation is read before asking: a block applied meanwhile files the answer
        # under the old generation, where no later lookup finds it.
        key = (self._generation(), body)
        decision = self._cache.get(key)
        if decision is not None:
            metrics.DECISION_CACHE.labels("hit").inc()
            return decision
        metrics.DECISION_CACHE.labels("miss").inc()
        decision = self._ask(body)
        anonymous = input_doc.get("credential", {}).get("type") == "none"
        if not (decision.upsert_user or decision.upsert_team) and (decision.allow or not anonymous):
            self._cache.put(key, decision)
        return decision

    def _ask(self, body: bytes) -> Decision:
        started = time.perf_counter()
        try:
            return self._opa.decide_encoded(body)
        finally:
            metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
