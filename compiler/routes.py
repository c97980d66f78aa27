"""LiteLLM route groups and their expansion into explicit route sets.

A route entry in the config is a group name (`openai_routes`), a literal path
(`/v1/chat/completions`), a template (`/v1/models/{model}`, each `{param}`
matching exactly one path segment) or a prefix (`/internal-models/*`: every path
below `/internal-models/`, not the bare prefix). Expansion yields sorted literal
paths, templates and prefixes, so a reviewer reads exactly what a role may call.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from .diagnostics import did_you_mean
from .model import RouteSet

_PARAM = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")
_LITERAL_SEGMENT = re.compile(r"^[A-Za-z0-9_~:@!$&'()+,;=.-]+$")


@lru_cache(maxsize=1)
def groups() -> dict[str, tuple[str, ...]]:
    """LiteLLM 1.80.0's route groups (LiteLLMRoutes), member order as shipped."""
    raw = json.loads((Path(__file__).parent / "litellm_route_groups.json").read_text())
    return {name: tuple(members) for name, members in raw["groups"].items()}


def is_template(path: str) -> bool:
    return "{" in path


def is_prefix(path: str) -> bool:
    return path.endswith("/*")


def _normalise_member(path: str) -> str:
    # LiteLLM lists `/realtime?{model}`: the query is not part of the matched path,
    # and regate matches paths only, so the member stands for `/realtime`.
    return path.split("?", 1)[0]


def expand(entries: tuple[str, ...]) -> RouteSet:
    """Expand group names into their members; split literal paths from templates."""
    table = groups()
    paths: set[str] = set()
    for entry in entries:
        members = table.get(entry, (entry,))
        paths.update(_normalise_member(m) for m in members)
    exact = tuple(sorted(p for p in paths if not is_template(p) and not is_prefix(p)))
    templates = tuple(sorted(p for p in paths if is_template(p)))
    prefixes = tuple(sorted(p[:-1] for p in paths if is_prefix(p)))
    return RouteSet(entries=tuple(entries), exact=exact, templates=templates, prefixes=prefixes)


def template_key(template: str) -> str:
    """`/v1/models/{model}` → `/v1/models/*`: the lookup key the policy builds from a path."""
    return "/".join("*" if _PARAM.match(seg) else seg for seg in template.split("/"))


def template_mask(template: str) -> tuple[int, ...]:
    """Indexes of the `{param}` segments in `template.split("/")`."""
    return tuple(i for i, seg in enumerate(template.split("/")) if _PARAM.match(seg))


def table(routes: RouteSet) -> dict:
    """The data the policy looks routes up in, every lookup O(1) in the number of routes:
    exact paths and template keys as objects, plus the few distinct wildcard masks
    per segment count (the policy tries each mask, not each template)."""
    masks: dict[str, set[tuple[int, ...]]] = {}
    for template in routes.templates:
        masks.setdefault(str(len(template.split("/"))), set()).add(template_mask(template))
    return {
        "exact": {p: True for p in routes.exact},
        "templates": {template_key(t): True for t in routes.templates},
        "template_masks": {n: [list(m) for m in sorted(ms)] for n, ms in sorted(masks.items())},
        "prefixes": {p: True for p in routes.prefixes},
    }


def describe_invalid_entry(entry: str) -> tuple[str, str]:
    """A message and code for a route entry the schema rejected."""
    if not entry.startswith("/"):
        hint = did_you_mean(entry, groups())
        return (
            f"unknown route group '{entry}'{hint}; a route is a group name or a path starting with '/'",
            "unknown-route-group",
        )
    segments = entry.split("/")[1:]
    if segments and segments[-1] == "*":
        segments = segments[:-1]  # a trailing /* is a prefix
    for seg in segments:
        if seg == "":
            return f"invalid route '{entry}': empty path segment (no '//' and no trailing '/')", "invalid-route"
        if seg in (".", ".."):
            return f"invalid route '{entry}': '{seg}' segments are not allowed", "invalid-route"
        if "{" in seg or "}" in seg:
            if not _PARAM.match(seg):
                return f"invalid route '{entry}': a template segment must be exactly {{name}}, got '{seg}'", "invalid-route"
        elif "*" in seg:
            return f"invalid route '{entry}': only a trailing '/*' is a wildcard (every route below a prefix)", "invalid-route"
        elif not _LITERAL_SEGMENT.match(seg):
            bad = next(c for c in seg if not _LITERAL_SEGMENT.match(c))
            return f"invalid route '{entry}': character {bad!r} is not allowed in a route", "invalid-route"
    return f"invalid route '{entry}'", "invalid-route"
