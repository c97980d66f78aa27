"""Validate loaded config values against schemas/config.schema.json.

Every problem is collected (not just the first) and turned into a located
Diagnostic with a stable code. The schema is the grammar; the `x-` keywords it
uses are regate extensions implemented here:

- `x-unsupported` / `x-accepts`: a LiteLLM key regate does not implement; only the
  listed values (which change nothing) are allowed, so a policy never silently
  differs from what the config says.
- `x-near-miss`: an open object (other LiteLLM keys are fine) whose unknown keys
  must not be typos of the keys regate reads.
- `x-kind`: which domain-specific message a `pattern` failure gets.
"""

from __future__ import annotations

import json
from functools import lru_cache

import jsonschema
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from . import resources, routes
from .diagnostics import Diagnostic, closest, did_you_mean
from .loader import LoadedConfig

NEAR_MISS_CUTOFF = 0.8


def _x_unsupported(validator, reason, instance, schema):
    if instance not in schema.get("x-accepts", []):
        yield ValidationError(reason, validator="x-unsupported")


def _x_near_miss(validator, enabled, instance, schema):
    if not enabled or not isinstance(instance, dict):
        return
    known = list(schema.get("properties", {}))
    for key in instance:
        if key not in known and closest(key, known, NEAR_MISS_CUTOFF):
            yield ValidationError(key, validator="x-near-miss")


_RegateValidator = jsonschema.validators.extend(
    Draft202012Validator,
    {"x-unsupported": _x_unsupported, "x-near-miss": _x_near_miss},
)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = json.loads(resources.schema_path("config.schema.json").read_text())
    return _RegateValidator(schema)


_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


def _type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _where(path) -> str:
    return "at the top level" if not path else f"in '{path[-1]}'" if isinstance(path[-1], str) else "in this entry"


def _unknown_key(path, key: str, known) -> str:
    return f"unknown key '{key}' {_where(path)}{did_you_mean(key, known)}"


# The message ({value} is the offending value, shortened) and code of a `pattern` failure, by x-kind.
_PATTERN_MESSAGES = {
    "claim": ("invalid claim name {value}: use a claim name or a dot path like realm.team", "invalid-claim"),
    "scope": ("invalid scope {value}: a scope is one word without spaces", "invalid-scope"),
    "domain": ("invalid email domain {value}: expected a domain like example.com", "invalid-domain"),
    "master-key": ("master_key must start with 'sk-' (as LiteLLM requires) or be os.environ/NAME", "invalid-master-key"),
    "rego-path": ("invalid custom policy {value}: a path to a .rego file, relative to the config", "invalid-custom-policy"),
    "issuer": ("invalid issuer {value}: the exact iss of the provider's tokens, without spaces", "invalid-issuer"),
    "role-name": ("invalid role {value}: a role is one word without spaces", "invalid-role"),
    "team-id": ("invalid team id {value}: 1 to 256 characters, no control characters", "invalid-team-id"),
    "duration": ("invalid duration {value}: a whole number followed by s, m, h, d, w or mo (30s, 30m, 30h, 30d, 1mo)",
                 "invalid-duration"),
    "url": ("invalid URL {value}: expected http(s)://host[/path] or os.environ/NAME", "invalid-url"),
}


def _pattern_message(kind: str, value: str, path) -> tuple[str, str]:
    if kind == "route":
        return routes.describe_invalid_entry(value)
    message, code = _PATTERN_MESSAGES.get(kind, ("invalid value {value}", "invalid-value"))
    return message.format(value=_short(value)), code


def _matching_branch(error: ValidationError) -> list[ValidationError]:
    """The errors of the anyOf branch the value was evidently meant for: the first
    branch whose own type the value has; else the best single error."""
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    for errors in branches.values():
        if not any(e.validator == "type" and not e.relative_path for e in errors):
            return errors
    return [best_match(error.context)]


def _describe(error: ValidationError, loaded: LoadedConfig) -> list[Diagnostic]:
    path = tuple(error.absolute_path)
    v = error.validator
    if v == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in known]
        return [loaded.diagnostic(path + (k,), _unknown_key(path, k, known), "unknown-key", key=True) for k in extras]
    if v == "x-near-miss":
        key = error.message
        known = list(error.schema.get("properties", {}))
        return [loaded.diagnostic(path + (key,), _unknown_key(path, key, known), "unknown-key", key=True)]
    if v == "x-unsupported":
        name = path[-1]
        message = f"'{name}' is not supported by regate: {error.message}; remove it"
        return [loaded.diagnostic(path, message, "unsupported-key", key=True)]
    if v == "type":
        expected = error.validator_value
        names = " or ".join(_TYPE_NAMES[t] for t in (expected if isinstance(expected, list) else [expected]))
        message = f"expected {names}, got {_type_name(error.instance)} ({_short(error.instance)})"
        return [loaded.diagnostic(path, message, "wrong-type")]
    if v == "required":
        missing = error.message.split("'")[1]
        return [loaded.diagnostic(path, f"missing required key '{missing}' {_where(path)}", "missing-key")]
    if v == "pattern":
        message, code = _pattern_message(error.schema.get("x-kind", ""), error.instance, path)
        return [loaded.diagnostic(path, message, code)]
    if v == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        message = f"expected one of {choices}, got {_short(error.instance)}{did_you_mean(str(error.instance), error.validator_value)}"
        return [loaded.diagnostic(path, message, "invalid-choice")]
    if v in ("minimum", "exclusiveMinimum", "maximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<="}[v]
        return [loaded.diagnostic(path, f"must be {op} {error.validator_value}, got {_short(error.instance)}", "out-of-range")]
    if v in ("minLength", "minItems"):
        return [loaded.diagnostic(path, "must not be empty", "empty-value")]
    if v == "anyOf":
        if error.schema.get("x-kind") == "domains" and not isinstance(error.instance, (str, list)):
            message = f"expected a domain or a list of domains, got {_type_name(error.instance)} ({_short(error.instance)})"
            return [loaded.diagnostic(path, message, "wrong-type")]
        return [d for e in _matching_branch(error) for d in _describe(e, loaded)]
    return [loaded.diagnostic(path, error.message, "invalid-value")]


def validate(loaded: LoadedConfig) -> list[Diagnostic]:
    """Every schema violation in `loaded`, as located diagnostics sorted by position."""
    if not isinstance(loaded.data, dict):
        return [loaded.diagnostic((), f"expected a mapping at the top level, got {_type_name(loaded.data)}", "wrong-type")]
    found: set[Diagnostic] = set()
    for error in _validator().iter_errors(loaded.data):
        found.update(_describe(error, loaded))
    return sorted(found)
