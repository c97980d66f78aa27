"""Recent OPA decisions, so a caller repeating the same request skips the round trip to OPA.

The key is the exact input OPA would see (claims, path, method, model, facts) plus the
blocked-team state generation: a block applied to this worker's OPA bumps the generation,
so no cached allow outlives it. The TTL (0.5 s by default) bounds how long a new policy
revision takes to show. Errors are never cached (a failure to decide is never remembered),
nor decisions that upsert a user or a team (the next request's facts differ anyway), nor
refusals of requests without a credential (anyone can send any number of them).

Spend figures (input.facts.budgets.*.spend_nanos) change with nearly every call of a
principal with a budget, so an exact key would never be found again. An allow that reports
`budget_headroom_nanos` (the smallest max − spend over the budgets that applied) is filed
under the input without its spend figures instead, with the figures it was decided on, and
reused only while no principal's spend has grown by the headroom or more since: every budget
that applied is then still below its max, which is all the policy reads of the spend, so OPA
would answer the same. Any other change of the input (a budget, a period, a principal) is
another key.

What the cache holds is bounded in entries and in bytes (the encoded inputs, whose
client-chosen parts the gate bounds too: path, model name); expired entries leave at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from . import metrics
from .decisions import Decision, OpaClient, encode_input
from .ttl_cache import TtlCache

ENTRY_OVERHEAD = 400  # bytes a cached decision costs beside its key: the tuple, the Decision, the dict slot

Spends = tuple[tuple[str, int], ...]  # (principal, spend_nanos), in a fixed order


@dataclass(frozen=True)
class _BudgetedAllow:
    """An allow filed under its input without spend figures: the figures it was decided on."""

    decision: Decision
    spends: Spends

    def holds_for(self, spends: Spends) -> bool:
        """The same principals, none of whose spend has grown by the headroom since."""
        headroom = self.decision.budget_headroom_nanos
        return (len(spends) == len(self.spends)
                and all(name == was_name and spent - was < headroom
                        for (name, spent), (was_name, was) in zip(spends, self.spends)))


def split_spends(input_doc: dict) -> tuple[dict, Spends]:
    """The input without the spend figures of input.facts.budgets, and those figures
    (empty, with the input itself, when there are none)."""
    budgets = (input_doc.get("facts") or {}).get("budgets")
    if not budgets or not all(_has_spend(f) for f in _facts_of(budgets)):
        return input_doc, ()
    spends: list[tuple[str, int]] = []
    stripped: dict = {}
    for kind, fact in sorted(budgets.items()):
        if kind == "teams":
            stripped[kind] = {}
            for team_id, team_fact in sorted(fact.items()):
                stripped[kind][team_id] = _without_spend(team_fact, f"teams/{team_id}", spends)
        else:
            stripped[kind] = _without_spend(fact, kind, spends)
    return {**input_doc, "facts": {**input_doc["facts"], "budgets": stripped}}, tuple(spends)


def _facts_of(budgets: dict):
    for kind, fact in budgets.items():
        yield from (fact.values() if kind == "teams" else (fact,))


def _has_spend(fact) -> bool:
    spend = fact.get("spend_nanos") if isinstance(fact, dict) else None
    return isinstance(spend, int) and not isinstance(spend, bool)


def _without_spend(fact: dict, name: str, spends: list[tuple[str, int]]) -> dict:
    spends.append((name, fact["spend_nanos"]))
    return {k: v for k, v in fact.items() if k != "spend_nanos"}


class DecisionCache:
    def __init__(self, opa: OpaClient, *, ttl: float, generation: Callable[[], int], maxsize: int = 4096,
                 max_bytes: int = 8 * 1024 * 1024, clock: Callable[[], float] = time.monotonic):
        self._opa = opa
        self._generation = generation
        self._cache = TtlCache(ttl, maxsize=maxsize, clock=clock, max_bytes=max_bytes,
                               size_of=lambda key, _: len(key[-1]) + ENTRY_OVERHEAD) if ttl > 0 else None

    @property
    def entries(self) -> int:
        return len(self._cache) if self._cache is not None else 0

    @property
    def weight(self) -> int:
        return self._cache.weight if self._cache is not None else 0

    def decide(self, input_doc: dict) -> Decision:
        if self._cache is None:
            return self._ask(encode_input(input_doc))
        # The generation is read before asking: a block applied meanwhile files the answer
        # under the old generation, where no later lookup finds it.
        generation = self._generation()
        spend_free, spends = split_spends(input_doc)
        budgeted_key = (generation, "spend-free", encode_input(spend_free)) if spends else None
        if budgeted_key is not None:
            entry = self._cache.get(budgeted_key)
            if entry is not None and entry.holds_for(spends):
                metrics.labelled(metrics.DECISION_CACHE, "hit").inc()
                return entry.decision
        body = encode_input(input_doc)
        key = (generation, body)
        decision = self._cache.get(key)
        if decision is not None:
            metrics.labelled(metrics.DECISION_CACHE, "hit").inc()
            return decision
        metrics.labelled(metrics.DECISION_CACHE, "miss").inc()
        decision = self._ask(body)
        anonymous = input_doc.get("credential", {}).get("type") == "none"
        if decision.upsert_user or decision.upsert_team or (anonymous and not decision.allow):
            return decision
        if budgeted_key is not None and decision.budget_headroom_nanos is not None:
            self._cache.put(budgeted_key, _BudgetedAllow(decision, spends))
        else:
            self._cache.put(key, decision)
        return decision

    def _ask(self, body: bytes) -> Decision:
        started = time.perf_counter()
        try:
            return self._opa.decide_encoded(body)
        finally:
            metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
