"""The bundle's METADATA annotations, as OPA itself reads them (`opa inspect --annotations`).

Every check of the decision is annotated in authz.rego with its reason code, its stage
(credential checks stop the decision; access checks run after them) and the config keys it
comes from (compiler/citations.py). Two blocks that are no reason code are annotated alike,
named by `custom.check`: the public routes, which open a route to any caller (stage public),
and the custom policies, which deny with codes of their own (stage custom). `regate explain` joins these to OPA's decision; the
bundle checks (bundle_checks.py) hold every package and entrypoint to being documented.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from regate.common.errors import RegateError
from regate.common.opa import find_opa

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class InspectError(RegateError):
    """Raised when `opa inspect` fails on a bundle."""

    code = "inspect_failed"


def inspect(bundle_dir: Path, opa_bin: str | None = None) -> dict:
    """`opa inspect --annotations --format json` of a bundle directory."""
    run = subprocess.run([opa_bin or find_opa(), "inspect", "--annotations", "--format", "json", str(bundle_dir)],
                         capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise InspectError(f"opa inspect failed: {run.stderr.strip() or run.stdout.strip()}")
    return json.loads(run.stdout)


def ref(path: list[dict]) -> str:
    """An annotation's path as a Rego reference: data.regate.authz._access_denials.no_role."""
    out = ""
    for part in path:
        value = part["value"]
        if part["type"] == "var":
            out += value
        elif isinstance(value, str) and _IDENTIFIER.match(value):
            out += f".{value}"
        else:
            out += f"[{json.dumps(value)}]"
    return out


@dataclass(frozen=True)
class Rule:
    ref: str
    file: str  # relative to the bundle root
    line: int

    def as_json(self) -> dict:
        return {"ref": self.ref, "file": self.file, "line": self.line}


@dataclass(frozen=True)
class Check:
    """One check of the decision: a reason code, the rules that raise it, the config behind it."""

    reason: str
    title: str
    description: str
    stage: str
    rules: tuple[Rule, ...]
    config: tuple[dict, ...]


def _relative(file: str, bundle_dir: Path) -> str:
    root = str(bundle_dir).rstrip("/") + "/"
    return file[len(root):] if file.startswith(root) else file


def checks(inspected: dict, bundle_dir: Path) -> dict[str, Check]:
    """reason code (or block name, custom.check) → Check, from the annotations whose `custom` names one."""
    found: dict[str, Check] = {}
    for entry in inspected.get("annotations") or []:
        notes = entry["annotations"]
        custom = notes.get("custom") or {}
        name = custom.get("reason") or custom.get("check")
        if not name:
            continue
        rule = Rule(ref(entry["path"]), _relative(entry["location"]["file"], bundle_dir), entry["location"]["row"])
        known = found.get(name)
        if known is None:
            found[name] = Check(name, notes.get("title", ""), notes.get("description", ""), custom.get("stage", ""),
                                (rule,), tuple(custom.get("config") or ()))
        else:
            description = " ".join(dict.fromkeys([known.description, notes.get("description", "")]))
            found[name] = Check(known.reason, known.title, description, known.stage,
                                tuple(sorted(known.rules + (rule,), key=lambda r: r.line)), known.config)
    return found
