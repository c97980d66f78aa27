"""`os.environ/NAME` references: config values (secrets, URLs) resolved from the environment at run time.

The compiler only recognises them (a reference is never written into a bundle); the enforcer
resolves them once at start. Errors name the variable, never a value.
"""

from __future__ import annotations

from typing import Mapping

from .errors import RegateError

ENV_PREFIX = "os.environ/"


def is_reference(value: object) -> bool:
    """Whether `value` is an `os.environ/NAME` reference."""
    return isinstance(value, str) and value.startswith(ENV_PREFIX)


def resolve(value: str | None, what: str, environ: Mapping[str, str]) -> str | None:
    """A literal as it is (None and "" as None), or the value of `os.environ/NAME`.

    Raises RegateError `missing_env` when the variable is unset or empty; `what` says which
    setting referred to it (e.g. "general_settings.master_key").
    """
    if not is_reference(value):
        return value or None
    name = value[len(ENV_PREFIX):]
    resolved = environ.get(name) if name else None
    if not resolved:
        raise RegateError(f"{what} refers to environment variable {name or '(empty name)'}, which is not set",
                          code="missing_env")
    return resolved
