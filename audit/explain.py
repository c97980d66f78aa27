"""`regate explain`: why the policy decides what it decides for one request.

The decision and the message of every failing check are OPA's (evaluate.py); which rule
raised each check, and the config key and line behind it, come from the bundle's
METADATA annotations as `opa inspect` reads them (annotations.py). Nothing is decided here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import jsonschema

from regate.common.errors import RegateError
from regate.compiler import resources
from regate.compiler.model import Config

from . import annotations
from .evaluate import STATE, Case, Evaluator


class InputError(RegateError):
    """Raised when the request described on the command line is not a valid OPA input."""

    code = "invalid_input"
    status = 400


def _json_object(option: str, raw: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise InputError(f"{option}: not JSON ({e})") from None
    if not isinstance(value, dict):
        raise InputError(f"{option}: expected a JSON object, got {type(value).__name__}")
    return value


def _segment(raw: str, what: str) -> dict:
    """One base64url JSON-object segment of a JWT, decoded as PyJWT decodes it."""
    data = raw.encode("utf-8")
    try:
        value = json.loads(base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4)))
    except ValueError:  # binascii.Error, JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(f"--token: the {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise InputError(f"--token: the {what} is not a JSON object")
    return value


def claims_of_token(token: str) -> dict:
    """A JWT's claims, read without verifying it (header and payload must decode). Messages never
    repeat the token."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InputError("--token: not a JWT (expected three dot-separated parts)")
    _segment(parts[0], "header")
    return _segment(parts[1], "payload")


def _jwt(claims: dict, issuers: Iterable[str]) -> dict:
    """A JWT credential; a token whose iss names an issuers entry is verified by that entry's keys,
    and the enforcer tells the policy so (credential.issuer)."""
    issuer = claims.get("iss")
    return {"type": "jwt", "claims": claims} | ({"issuer": issuer} if issuer in set(issuers) else {})


def credential(*, claims: str | None = None, token: str | None = None, master_key: bool = False,
               virtual_key: str | None = None, issuers: Iterable[str] = ()) -> dict:
    """The OPA input's credential from exactly one of the command line's credential options
    (none of them: no credential); `issuers`: the config's issuers entries."""
    if claims is not None:
        return _jwt(_json_object("--claims", claims), issuers)
    if token is not None:
        return _jwt(claims_of_token(token), issuers)
    if master_key:
        return {"type": "master_key"}
    if virtual_key is not None:
        owner = {"user_id": None, "team_id": None, "org_id": None, "models": []}
        return {"type": "virtual_key", "key": owner | _json_object("--virtual-key", virtual_key)}
    return {"type": "none"}


def request_input(cred: dict, *, method: str, path: str, model: str | None = None, team: str | None = None,
                  facts: str | None = None) -> dict:
    """A complete OPA input, checked against schemas/input.schema.json; `team` is the
    x-litellm-team-id header."""
    request = {"method": method.upper(), "path": path}
    if model is not None:
        request["model"] = model
    if team is not None:
        request["requested_team"] = team
    doc = {"request": request, "credential": cred}
    if facts is not None:
        doc["facts"] = _json_object("--facts", facts)
    schema = json.loads(resources.schema_path("input.schema.json").read_text())
    problems = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if problems:
        where = lambda e: ".".join(["input", *(str(p) for p in e.absolute_path)])  # noqa: E731
        raise InputError("; ".join(f"{where(e)}: {e.message}" for e in problems))
    return doc


@dataclass(frozen=True)
class CheckResult:
    check: annotations.Check
    outcome: str  # deny | pass | not_reached; the public-route block: allow | not_applicable
    message: str | None

    def as_json(self, config_path: str) -> dict:
        c = self.check
        return {"reason": c.reason, "outcome": self.outcome, "message": self.message, "title": c.title,
                "description": c.description, "stage": c.stage, "rules": [r.as_json() for r in c.rules],
                "config": [_located(cited, config_path) for cited in c.config]}


def _located(cited: dict, config_path: str) -> dict:
    """A citation with the config file as given on the command line (the bundle names its basename)."""
    file = config_path if cited.get("file") == Path(config_path).name else cited.get("file")
    return {k: v for k, v in cited.items() if k != "file"} | {"file": file}


@dataclass(frozen=True)
class Explanation:
    config_path: str
    input: dict
    decision: dict
    by: str  # opa | enforcer
    results: tuple[CheckResult, ...]

    def as_json(self) -> dict:
        return {"config": self.config_path, "input": self.input, "decision": self.decision, "decided_by": self.by,
                "checks": [r.as_json(self.config_path) for r in self.results]}


def _results(answer: dict, checks: dict[str, annotations.Check]) -> tuple[CheckResult, ...]:
    """Every check in the order the decision runs them: the public-route block, the built-in checks,
    the custom policies' denials (before the budget, as the decision orders them)."""
    decision, denials, public = answer["decision"], answer["denials"], answer["public"]
    stopped = public or any(r in checks and checks[r].stage == "credential" for r in decision["reasons"])
    results = []
    if "public_route" in checks:
        results.append(CheckResult(checks["public_route"], "allow" if public else "not_applicable", None))

    def outcome(check: annotations.Check, denied: bool) -> str:
        if denied:
            return "deny"
        return "not_reached" if stopped and (public or check.stage != "credential") else "pass"

    for reason in answer["reason_order"]:
        if reason == "budget_exceeded":
            results += _custom_results(answer, checks, outcome)
        check = checks.get(reason) or annotations.Check(reason, "", "(no METADATA annotation)", "", (), ())
        results.append(CheckResult(check, outcome(check, reason in denials), denials.get(reason)))
    return tuple(results)


def _custom_results(answer: dict, checks: dict[str, annotations.Check], outcome) -> list[CheckResult]:
    """The custom policies: each code they deny with, or the block itself when none does."""
    block = checks.get("custom_policies")
    if block is None:
        return []
    custom = answer["custom_denials"]
    if not custom:
        return [CheckResult(block, outcome(block, False), None)]
    return [CheckResult(replace(block, reason=code), "deny", denial["message"]) for code, denial in custom.items()]


def explain(config: Config, config_path: str, doc: dict, *, blocked_teams: tuple[str, ...] = ()) -> Explanation:
    """OPA's decision for `doc` under `config`, each check with its rule and config lines."""
    if doc["credential"]["type"] == "master_key" and not config.policy.master_key_configured:
        refused = {"allow": False, "status": 401, "reasons": ["master_key_not_configured"],
                   "message": "the config sets no general_settings.master_key: the enforcer looks the key up as a "
                              "virtual key and refuses it (401) before asking OPA"}
        return Explanation(config_path, doc, refused, "enforcer", ())
    state = STATE | {"blocked_teams": {team: True for team in blocked_teams}}
    with Evaluator(config, state=state) as opa:
        answer = opa.explain(Case(doc))
        checks = annotations.checks(annotations.inspect(opa.bundle_dir, opa.opa_bin), opa.bundle_dir)
    return Explanation(config_path, doc, answer["decision"], "opa", _results(answer, checks))


def _citation(cited: dict) -> str:
    where = f"{cited['file']}:{cited['line']}" if cited.get("line") else "default"
    return f"{cited['key']} ({where})" + (f": {cited['module']}" if cited.get("module") else "")


def _block(result: CheckResult, role: str | None, config_path: str) -> list[str]:
    c = result.check
    lines = [f"  {c.reason}: {c.title}" if c.title else f"  {c.reason}"]
    if result.message:
        lines.append(f"    {result.message}")
    for rule in c.rules:
        lines.append(f"    rule    {rule.ref} ({rule.file}:{rule.line})")
    cited = [_located(x, config_path) for x in c.config if role is None or x.get("role") in (None, role)]
    for x in cited:
        lines.append(f"    config  {_citation(x)}")
    if not c.rules:
        lines.append(f"    {c.description}")
    return lines


def explanation_text(e: Explanation) -> str:
    d = e.decision
    request = e.input["request"]
    cred = e.input["credential"]
    shown = {"jwt": lambda: "JWT claims " + json.dumps(cred.get("claims", {}), sort_keys=True),
             "virtual_key": lambda: "virtual key " + json.dumps(cred.get("key", {}), sort_keys=True)}
    verdict = "allow" if d["allow"] else f"deny {d['status']} {d['reasons'][0]}"
    header = f" x-litellm-team-id {request['requested_team']}" if request.get("requested_team") is not None else ""
    lines = [
        f"config      {e.config_path}",
        f"request     {request['method']} {request['path']}" + (f" model {request['model']}" if request.get("model") else "")
        + header,
        f"credential  {shown.get(cred['type'], lambda: cred['type'].replace('_', ' '))()}"
        + (f" (issuer {cred['issuer']})" if cred.get("issuer") else ""),
        f"decision    {verdict}: {d['message']}" + (" (decided by the enforcer, not OPA)" if e.by != "opa" else ""),
    ]
    if e.by == "opa":
        subject = " ".join(f"{k}={v}" for k, v in d["subject"].items() if v is not None) or "-"
        lines += [f"role        {d['role'] or '-'}", f"subject     {subject}"]
        if e.input.get("facts"):
            lines.append(f"facts       {json.dumps(e.input['facts'], sort_keys=True)}")
        if d.get("upsert_user"):
            lines.append("upsert      the enforcer creates the user (user_id_upsert)")
        if d.get("upsert_team"):
            lines.append(f"upsert      the enforcer creates team {d['subject']['team_id']} (team_id_upsert)")
    public = any(r.outcome == "allow" for r in e.results)
    heading, shown_outcome = ("allowed by:", "allow") if public else ("passed:", "pass") if d["allow"] else \
        ("denied by:", "deny")
    shown_results = [r for r in e.results if r.outcome == shown_outcome]
    if shown_results:
        lines += ["", heading]
        for r in shown_results:
            lines += _block(r, d.get("role"), e.config_path)
        rest = len(e.results) - len(shown_results)
        if rest:
            checks = "check" if rest == 1 else "checks"
            lines += ["", f"{rest} other {checks} passed, did not apply or were not reached (--json lists every check)."]
    return "\n".join(lines) + "\n"
