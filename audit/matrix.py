"""`regate matrix`: who may call what under a config, as OPA decides it.

Rows are principal classes (principals.py), columns route groups, routes and templates
(columns.py); a cell holds the decision for every path of its column. All cells of a config
are decided by one real OPA in a few batch queries (evaluate.py).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

from regate.compiler.model import Config

from . import columns as cols
from . import principals as who
from .columns import Column
from .evaluate import Case, Evaluator, Outcome
from .principals import Principal

# The enforcer refuses a master key that the config does not set before asking OPA: the key is
# looked up as a virtual key and is not one (401). So it does a token of an issuer the config does
# not list (the principals take top-level tokens as JWT_PUBLIC_KEY_URL's).
NO_MASTER_KEY = Outcome(False, 401, ("master_key_not_configured",), by="enforcer")
UNKNOWN_ISSUER = Outcome(False, 401, ("unknown_issuer",), by="enforcer")

Request = tuple[str, str | None]  # (path, model)


def request_input(principal: Principal, path: str, model: str | None) -> dict:
    request = {"method": cols.METHOD, "path": path}
    if model is not None:
        request["model"] = model
    if principal.header is not None:
        request["requested_team"] = principal.header
    return {"request": request, "credential": principal.credential}


def refused_by_enforcer(config: Config, principal: Principal) -> Outcome | None:
    """The enforcer's answer to a credential it refuses before asking OPA, else None."""
    if principal.needs_master_key and not config.policy.master_key_configured:
        return NO_MASTER_KEY
    if principal.needs_issuer and principal.needs_issuer not in {i.issuer for i in config.policy.issuers}:
        return UNKNOWN_ISSUER
    return None


def decide(config: Config, principals: list[Principal], requests: list[Request], *,
           group_paths: bool = True) -> dict[tuple[str, Request], Outcome]:
    """The outcome of every principal × request under `config`, keyed by (principal key, request).

    With `group_paths`, OPA decides one request of each (route profile, model) for every
    principal, and the others of its group take that decision (see stand_ins)."""
    outcomes: dict[tuple[str, Request], Outcome] = {}
    asked = []
    for principal in principals:
        refused = refused_by_enforcer(config, principal)
        if refused is None:
            asked.append(principal)
        else:
            outcomes.update(((principal.key, request), refused) for request in requests)
    if not asked:
        return outcomes
    with Evaluator(config) as opa:
        stand_in = stand_ins(opa, config, requests) if group_paths else {r: r for r in requests}
        distinct = list(dict.fromkeys(stand_in.values()))
        cases = [Case(request_input(p, *request), p.store) for p in asked for request in distinct]
        decided = dict(zip([(p.key, request) for p in asked for request in distinct], opa.outcomes(cases)))
    outcomes.update(((p.key, request), decided[(p.key, stand_in[request])]) for p in asked for request in requests)
    return outcomes


def stand_ins(opa: Evaluator, config: Config, requests: list[Request]) -> dict[Request, Request]:
    """For each request, the first request with its path's route profile and its model: the built-in
    checks read a path only through its profile (batch.rego), so both get the same decision from
    every caller. A custom policy may read the path in any way: then each request stands for itself."""
    if config.policy.custom_policies.value:
        return {r: r for r in requests}
    paths = list(dict.fromkeys(path for path, _ in requests))
    profiles = {path: json.dumps(profile, sort_keys=True) for path, profile in zip(paths, opa.route_profiles(paths))}
    first: dict[tuple[str, str | None], Request] = {}
    return {(path, model): first.setdefault((profiles[path], model), (path, model)) for path, model in requests}


@dataclass(frozen=True)
class Cell:
    """The outcomes of one principal on every path of one column."""

    outcomes: tuple[Outcome, ...]

    @property
    def allowed(self) -> int:
        return sum(o.allow for o in self.outcomes)

    def text(self) -> str:
        """`allow`, `deny <first reason>`, or `allow 3/40 (deny: <first reasons of the others>)`."""
        total = len(self.outcomes)
        if self.allowed == total:
            return "allow"
        denied = Counter(o.summary().removeprefix("deny ") for o in self.outcomes if not o.allow)
        why = ", ".join(reason if len(denied) == 1 and not self.allowed else f"{reason} {n}"
                        for reason, n in sorted(denied.items()))
        return f"deny {why}" if not self.allowed else f"allow {self.allowed}/{total} (deny: {why})"

    def as_json(self) -> dict:
        return {"allowed": self.allowed, "total": len(self.outcomes), "text": self.text()}


@dataclass(frozen=True)
class Matrix:
    source: str
    principals: list[Principal]
    columns: list[Column]
    outcomes: dict[tuple[str, Request], Outcome]

    def cell(self, principal: Principal, column: Column) -> Cell:
        return Cell(tuple(self.outcomes[(principal.key, r)] for r in column.requests()))

    def as_json(self) -> dict:
        return {
            "config": self.source,
            "method": cols.SHOWN_METHOD,
            "principals": [p.as_json() for p in self.principals],
            "columns": [c.as_json() for c in self.columns],
            "cells": [[self.cell(p, c).as_json() for c in self.columns] for p in self.principals],
            "decisions": [
                {"principal": p.label, "method": cols.SHOWN_METHOD, "path": path, "model": model}
                | self.outcomes[(p.key, (path, model))].as_json()
                for p in self.principals for path, model in cols.requests(self.columns)
            ],
        }


def build(config: Config, *, teams: tuple[str, ...] = ()) -> Matrix:
    """The access matrix of `config` (with a team token per name in `teams`)."""
    columns = cols.columns(config)
    principals = who.principals(config, teams, cols.model_names(columns))
    outcomes = decide(config, principals, cols.requests(columns))
    return Matrix(PurePosixPath(config.source_file).name, principals, columns, outcomes)
