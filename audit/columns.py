"""What may be called: the matrix's columns, read from the compiled model.

A column is a route group a role's or the public routes name (its members, as LiteLLM 1.80.0
ships them), a literal route, a template or a `/prefix/*` the config names, or "any other path"
(a path no role lists, which only the master key may call). Templates are asked as written:
`/v1/models/{model}` is itself a path the template matches; a prefix is asked as a path below it.

Where the config names models (model_list, role_permissions models, scope_mappings models),
each is a column too, asked as a chat completion naming it, and so is "any other model": model
limits come from keys and teams in the store as well as from the config.
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
MODEL_PATH = "/v1/chat/completions"  # where a model column's requests go
BELOW_PREFIX = "regate-any"  # the segment a prefix column asks below its prefix
UNLISTED_MODEL = "regate-unlisted-model"


@dataclass(frozen=True)
class Column:
    label: str
    kind: str  # group | route | template | prefix | model | other
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
        return Column(entry, "group", members.exact + members.templates
                      + tuple(p + BELOW_PREFIX for p in members.prefixes))
    if routes.is_prefix(entry):
        return Column(entry, "prefix", (entry[:-1] + BELOW_PREFIX,))
    return Column(entry, "template" if routes.is_template(entry) else "route", (entry,))


OTHER = Column("(any other path)", "other", (OUTSIDE_PATH,))
OTHER_MODEL = Column("(any other model)", "model", (MODEL_PATH,), UNLISTED_MODEL)


def models(config: Config) -> tuple[str, ...]:
    """The models the config names, in config order: model_list's, then role_permissions' and
    scope_mappings' (empty: no model columns)."""
    p = config.policy
    named = [d.model_name for d in config.deployments]
    named += [m for grants in (p.role_models.value, p.scope_mappings.value) for g in grants for m in g.models]
    return tuple(dict.fromkeys(named))


def columns(config: Config) -> list[Column]:
    """Every route entry of every role and of the public routes (groups, routes, templates,
    prefixes) once, in config order; "any other path"; then each model the config names and
    "any other model"."""
    seen: dict[str, Column] = {}
    for setting in [config.policy.routes[role] for role in ROLES] + [config.policy.public_routes]:
        for entry in setting.value.entries:
            seen.setdefault(entry, _column(entry))
    named = models(config)
    model_columns = [Column(f"model {m}", "model", (MODEL_PATH,), m) for m in named] + ([OTHER_MODEL] if named else [])
    return [*seen.values(), OTHER, *model_columns]


def merge(*groups: list[Column]) -> list[Column]:
    """The columns of several configs, each once: routes, "any other path", then models."""
    by_key: dict[tuple[str, str], Column] = {}
    for group in groups:
        for column in group:
            by_key.setdefault(column.key, column)
    found = list(by_key.values())
    routes_first = [c for c in found if c.kind not in ("other", "model")]
    model_columns = [c for c in found if c.kind == "model" and c != OTHER_MODEL]
    return [*routes_first, OTHER, *model_columns, *([OTHER_MODEL] if OTHER_MODEL in found else [])]


def requests(cols: list[Column]) -> list[tuple[str, str | None]]:
    """Every distinct (path, model) the columns ask about, in column order."""
    return list(dict.fromkeys(r for column in cols for r in column.requests()))


def model_names(cols: list[Column]) -> tuple[str, ...]:
    """The models of the model columns (not "any other model")."""
    return tuple(c.model for c in cols if c.kind == "model" and c.model != UNLISTED_MODEL)
