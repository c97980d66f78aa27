"""Reading a claim out of verified JWT claims the way the policy does (identity.rego's _claim_value)."""

from __future__ import annotations

from typing import Any, Mapping


def claim_value(claims: Mapping[str, Any], name: str | None) -> Any:
    """A claim by literal name first, else by dot path (the policy's rule, for the store lookups)."""
    if name is None:
        return None
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def string_claim(claims: Mapping[str, Any], name: str | None) -> str | None:
    """The claim when it is a non-empty string (the policy's `_id`), else None."""
    value = claim_value(claims, name)
    return value if isinstance(value, str) and value else None
