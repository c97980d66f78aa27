"""`regate diff OLD NEW`: every decision that changes between two configs.

A decision changes when what the caller gets changes: allowed or not, the status, or the
first reason (the one the answer carries); a change among the further reasons alone is not one.

Both configs are judged on the same cells: the union of their principals, routes and models
(a principal only one config names — say, a token in a newly allowed email domain — is asked
of both). Each config's bundle runs in its own real OPA, both at once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from regate.compiler.model import Config

from . import columns as cols
from . import principals as who
from .columns import Column
from .evaluate import Outcome
from .matrix import decide
from .principals import Principal


@dataclass(frozen=True)
class Change:
    principal: Principal
    path: str
    model: str | None
    before: Outcome
    after: Outcome

    @property
    def widens(self) -> bool:
        return self.after.allow and not self.before.allow

    @property
    def narrows(self) -> bool:
        return self.before.allow and not self.after.allow

    def as_json(self) -> dict:
        return {"principal": self.principal.label, "method": cols.SHOWN_METHOD, "path": self.path,
                "model": self.model, "before": self.before.as_json(), "after": self.after.as_json()}


@dataclass(frozen=True)
class Diff:
    old: str
    new: str
    changes: list[Change]
    cells: int  # how many principal × request cells were compared
    columns: list[Column]  # both configs' columns, to name whole route groups

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def as_json(self) -> list[dict]:
        return [c.as_json() for c in self.changes]


def compare(old: Config, new: Config, *, teams: tuple[str, ...] = ()) -> Diff:
    columns = cols.merge(cols.columns(old), cols.columns(new))
    models = cols.model_names(columns)
    principals = who.merge(who.principals(old, teams, models), who.principals(new, teams, models))
    requests = cols.requests(columns)
    with ThreadPoolExecutor(max_workers=2) as pool:
        before, after = pool.map(lambda config: decide(config, principals, requests), (old, new))
    changes = [Change(p, path, model, before[(p.key, (path, model))], after[(p.key, (path, model))])
               for p in principals for path, model in requests
               if before[(p.key, (path, model))].answer != after[(p.key, (path, model))].answer]
    return Diff(old.source_file, new.source_file, changes, len(principals) * len(requests), columns)
