"""Recent OPA decisions, so a caller repeating the same request skips the round trip to OPA.

The key is the exact input OPA would see (claims, path, method, model, facts) plus the
blocked-team state generation: a block applied to this worker's OPA bumps the generation,
so no cached allow outlives it. The TTL (0.5 s by default) bounds how long a new policy
revision takes to show. Errors are never cached (a failure to decide is never remembered),
nor decisions that upsert a user or a team (the next request's facts differ anyway).
"""

from __future__ import annotations

import time
from typing import Callable

from . import metrics
from .decisions import Decision, OpaClient, encode_input
from .ttl_cache import TtlCache


class DecisionCache:
    def __init__(self, opa: OpaClient, *, ttl: float, generation: Callable[[], int], maxsize: int = 4096):
        self._opa = opa
        self._generation = generation
        self._cache = TtlCache(ttl, maxsize=maxsize) if ttl > 0 else None

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
        if not (decision.upsert_user or decision.upsert_team):
            self._cache.put(key, decision)
        return decision

    def _ask(self, body: bytes) -> Decision:
        started = time.perf_counter()
        try:
            return self._opa.decide_encoded(body)
        finally:
            metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
