"""The user's own Rego checks (litellm_jwtauth.custom_policies, a regate extension): the
auditable counterpart of LiteLLM's Python `custom_validate`.

Each listed file (a path relative to the config) is a module in `package regate.custom.<name>`
whose `deny contains {"code", "message", "status"}` rules join the decision after the built-in
checks; files ending in `_test.rego` are its tests (`package regate.custom.<name>_test`), run
by `opa test` with the bundle. Two edges, both I/O: `load` reads the files (located errors
for unreadable files and wrong packages), `check` runs `opa check --strict` against the input
schema over the rendered bundle and turns OPA's errors into located diagnostics.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

from regate.common.errors import ConfigError
from regate.common.opa import OpaNotFoundError, find_opa

from . import resources
from .diagnostics import Diagnostic
from .model import Config, CustomPolicy

_PACKAGE = re.compile(r"^package\s+(\S+)", re.MULTILINE)
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
PREFIX = "regate.custom."
BUNDLE_DIR = "regate/custom"
MAX_BYTES = 1 << 20


def bundle_path(policy: CustomPolicy) -> str:
    return f"{BUNDLE_DIR}/{policy.module}.rego"


def load(config: Config) -> Config:
    """`config` with the text and module name of each custom policy file; ConfigError otherwise."""
    policies = config.policy.custom_policies.value
    if not policies:
        return config
    base = Path(config.source_file).parent
    problems: list[Diagnostic] = []
    loaded: list[CustomPolicy] = []
    seen: dict[str, str] = {}
    for policy in policies:
        where = policy.origin
        path = base / policy.path
        shown = str(PurePosixPath(config.source_file).parent / policy.path)
        try:
            raw = path.read_bytes()[: MAX_BYTES + 1]
            text = raw.decode("utf-8")
        except OSError as e:
            problems.append(Diagnostic(where.line, where.col, f"cannot read custom policy {policy.path}: {e.strerror}",
                                       "unreadable-custom-policy", where.file, _path(where)))
            continue
        except UnicodeDecodeError:
            problems.append(Diagnostic(1, 1, "custom policy is not UTF-8", "not-utf8", shown))
            continue
        if len(raw) > MAX_BYTES:
            problems.append(Diagnostic(1, 1, f"custom policy is larger than {MAX_BYTES} bytes", "custom-policy-too-large", shown))
            continue
        module, problem = _module(text, test=policy.path.endswith("_test.rego"))
        if problem:
            line, col, message = problem
            problems.append(Diagnostic(line, col, message, "custom-policy-package", shown))
            continue
        if module in seen:
            problems.append(Diagnostic(where.line, where.col, f"package regate.custom.{module} is in {seen[module]} already",
                                       "duplicate-custom-policy", where.file, _path(where)))
            continue
        seen[module] = policy.path
        loaded.append(replace(policy, module=module, text=text, shown=shown))
    if problems:
        raise ConfigError(sorted(problems))
    custom = replace(config.policy.custom_policies, value=tuple(loaded))
    return replace(config, policy=replace(config.policy, custom_policies=custom))


def _path(origin) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", origin.path) if p)


def _module(text: str, *, test: bool) -> tuple[str, tuple[int, int, str] | None]:
    """The module name after regate.custom., or a located problem with the package line."""
    match = _PACKAGE.search(text)
    if match is None:
        return "", (1, 1, "a custom policy needs a package line: package regate.custom.<name>")
    line = text.count("\n", 0, match.start()) + 1
    package = match.group(1)
    want = "regate.custom.<name>_test" if test else "regate.custom.<name>"
    if not package.startswith(PREFIX) or not _NAME.match(name := package[len(PREFIX):]):
        return "", (line, 1, f"a custom policy must be in package {want}, not {package}")
    if test != name.endswith("_test"):
        return "", (line, 1, f"{'a test file (_test.rego)' if test else 'a policy'} must be in package {want}, not {package}")
    return name, None


def check(config: Config, files: dict[str, bytes]) -> None:
    """`opa check --strict` with the input schema over the rendered bundle: raise ConfigError with
    each problem located in the custom policy it is in (else at the custom_policies key)."""
    policies = config.policy.custom_policies.value
    if not policies:
        return
    setting = config.policy.custom_policies
    try:
        opa = find_opa()
    except OpaNotFoundError as e:
        raise ConfigError([_at_key(setting, f"custom_policies are checked with OPA, which is missing: {e}",
                                   "opa-not-found")]) from None
    by_bundle_path = {bundle_path(p): p for p in policies}
    with tempfile.TemporaryDirectory(prefix="regate-check-") as tmp:
        for path, data in files.items():
            target = Path(tmp) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        result = subprocess.run([opa, "check", "--strict", "--format", "json", "--schema",
                                 str(resources.schema_path("input.schema.json")), "."],
                                cwd=tmp, capture_output=True, text=True, timeout=120, env={**os.environ})
    if result.returncode == 0:
        return
    try:
        errors = json.loads(result.stdout or result.stderr)["errors"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError([_at_key(setting, f"opa check failed: {(result.stderr or result.stdout).strip()[:500]}",
                                   "custom-policy-invalid")]) from None
    problems = []
    for error in errors:
        location = error.get("location") or {}
        policy = by_bundle_path.get(str(location.get("file", "")).lstrip("./"))
        message = f"{error.get('message', 'invalid')} [{error.get('code', 'rego_error')}]"
        if policy is not None:
            problems.append(Diagnostic(int(location.get("row") or 1), int(location.get("col") or 1), message,
                                       "custom-policy-invalid", policy.shown))
        else:
            problems.append(_at_key(setting, f"{location.get('file', '?')}: {message}", "custom-policy-invalid"))
    raise ConfigError(sorted(problems))


def _at_key(setting, message: str, code: str) -> Diagnostic:
    origin = setting.origin
    return Diagnostic(origin.line, origin.col, message, code, origin.file, _path(origin))
