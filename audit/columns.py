"""What may be called: the matrix's columns, read from the compiled model.

A column is a route group a role's routes name (its members, as LiteLLM 1.80.0 ships them),
a literal route or a template the config names, or "any other path" (a path no role lists,
which only the master key may call). Templates are asked as written: `/v1/models/{model}` is
itself a path the template matches. Models become columns where the config limits models;
it limits none today (limits come from keys and teams in the store) — role_permissions and
scope_mappings will add them.
"""

from __future__ import annotations

from dataclasses import dataclass

from regate.compiler import routes
from regate.compiler.model import ROLES, Config
from regate.compiler.testcases import OUTSIDE_PATH

# The policy decides by path: routes carry no method. Every request is asked as a POST and
# shown as "*" (any method).
METHOD = "POST"
SHOWN_METHOD = "*"


@dataclass(frozen=True)
class Column:
    label: str
    kind: str  # group | route | template | other
    paths: tuple[str, ...]
    model: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.label

    def requests(self) -> list[tuple[str, str | None]]:
        return [(path, self.model) for path in self.paths]

    def as_json(self) -> dict:
        return {"label": self.label, "kind": self.kind, "paths": list(self.paths), "model": self.model}


def _column(entry: str) -> Column:
    if entry in routes.groups():
        members = routes.expand((entry,))
        return Column(entry, "group", members.exact + members.templates)
    return Column(entry, "template" if routes.is_template(entry) else "route", (entry,))


OTHER = Column("(any other path)", "other", (OUTSIDE_PATH,))


def columns(config: Config) -> list[Column]:
    """Every route entry of every role (groups, routes, templates) once, in config order, then
    "any other path"."""
    seen: dict[str, Column] = {}
    for role in ROLES:
        for entry in config.policy.routes[role].value.entries:
            seen.setdefault(entry, _column(entry))
    return [*seen.values(), OTHER]


def merge(*groups: list[Column]) -> list[Column]:
    """The columns of several configs, each once; "any other path" last."""
    by_key: dict[tuple[str, str], Column] = {}
    for group in groups:
        for column in group:
            if column.kind != "other":
                by_key.setdefault(column.key, column)
    return [*by_key.values(), OTHER]


def requests(cols: list[Column]) -> list[tuple[str, str | None]]:
    """Every distinct (path, model) the columns ask about, in column order."""
    return list(dict.fromkeys(r for column in cols for r in column.requests()))
