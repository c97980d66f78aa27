"""Reading claims out of verified JWT claims the way the policy does (identity.rego): a claim by
its literal name, else by dot path; ids are non-empty strings; roles a list or a string."""

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


def role_names(value: Any) -> set[str]:
    """A roles claim as the policy reads it: a list of strings, or a space-separated string."""
    if isinstance(value, str):
        return {role for role in value.split(" ") if role}
    if isinstance(value, list) and all(isinstance(role, str) for role in value):
        return set(value)
    return set()


def string_claim(claims: Mapping[str, Any], name: str | None) -> str | None:
    """The claim when it is a non-empty string (the policy's `_id`), else None."""
    value = claim_value(claims, name)
    return value if isinstance(value, str) and value else None
