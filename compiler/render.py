"""Render the intermediate model into the bundle's files (Rego, data, tests).

Pure: model in, {bundle path: bytes} out. Templates live in templates/; this
module only prepares small view values (citations, Rego literals) for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath

import jinja2

from regate.common.money import usd_to_nanos

from . import resources, routes
from .model import ROLES, ClaimField, Config, Setting
from .testcases import decision_cases

POLICY_FILES = ("identity", "roles", "routes", "email_domains", "blocked_teams", "users", "budgets", "authz")
DATA_PATH = "regate/tables/data.json"


def rego_literal(value) -> str:
    """A JSON value as a one-line Rego term in `opa fmt` style."""
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


@dataclass(frozen=True)
class _View:
    cite: str
    rego: str = ""
    describe: str = ""
    rule: str = ""
    enabled: str = ""


def _claim_view(rule: str, setting: Setting[ClaimField | None], source: str) -> _View:
    field = setting.value
    if field is None:
        return _View(setting.cite(source), "null", "not set", rule)
    value = {"name": field.name, "path": list(field.path)}
    return _View(setting.cite(source), rego_literal(value), f"claim {field.name}", rule)


def _budget_view(setting: Setting, source: str) -> _View:
    if setting.value is None:
        return _View(setting.cite(source), describe="not set", enabled="")
    nanos = usd_to_nanos(setting.value)
    return _View(setting.cite(source), rego_literal(nanos), f"USD {setting.value} = {nanos} nano-USD", enabled="true")


def _route_views(config: Config, source: str) -> list[dict]:
    views = []
    for role in ROLES:
        setting = config.policy.routes[role]
        rs = setting.value
        views.append(
            {
                "role": role,
                "cite": setting.cite(source),
                "entries": ", ".join(rs.entries) or "(none)",
                "summary": f"{len(rs.exact)} paths, {len(rs.templates)} templates in data.regate.tables.routes.{role}",
            }
        )
    return views


def tables(config: Config) -> dict:
    """The bundle's data document (data.regate.tables): large sets keyed by id for O(1) lookups."""
    policy = config.policy
    return {
        "email_domains": {d: True for d in policy.email_domains.value},
        "routes": {role: routes.table(policy.routes[role].value) for role in ROLES},
    }


def render(config: Config) -> dict[str, bytes]:
    """Every file of the bundle except .manifest, keyed by bundle path."""
    policy = config.policy
    source = PurePosixPath(config.source_file).name
    domains = policy.email_domains
    context = {
        "source": source,
        "claim_fields": [
            _claim_view("_team_field", policy.team_field, source),
            _claim_view("_user_field", policy.user_field, source),
            _claim_view("_org_field", policy.org_field, source),
            _claim_view("_end_user_field", policy.end_user_field, source),
            _claim_view("_email_field", policy.email_field, source),
        ],
        "admin_scope": _View(policy.admin_scope.cite(source), rego_literal(policy.admin_scope.value)),
        "route_sets": _route_views(config, source),
        "domains": _View(
            domains.cite(source),
            describe=(", ".join(domains.value) + " (data.regate.tables.email_domains)") if domains.value else "not set: no email check",
            enabled=rego_literal(bool(domains.value)),
        ),
        "email_field": _View(policy.email_field.cite(source)),
        "upsert": _View(policy.user_id_upsert.cite(source), rego_literal(policy.user_id_upsert.value)),
        "user_field": _View(policy.user_field.cite(source)),
        "user_check": _View("", rego_literal(policy.checks_user_existence)),
        "jwt_enabled": _View(policy.jwt_enabled.cite(source), rego_literal(policy.jwt_enabled.value)),
        "proxy_budget": _budget_view(config.budgets.proxy_max_budget, source),
        "proxy_duration": _View(config.budgets.proxy_budget_duration.cite(source),
                                describe=(f"the enforcer counts the proxy's spend per {config.budgets.proxy_budget_duration.value}"
                                          if config.budgets.proxy_budget_duration.value else "not set: the whole lifetime")),
        "end_user_budget": _budget_view(config.budgets.max_end_user_budget, source),
        "cases": decision_cases(config),
        "rego": rego_literal,
    }
    env = _env()
    files = {f"regate/{name}.rego": env.get_template(f"{name}.rego.j2").render(context) for name in POLICY_FILES}
    files["regate/authz_test.rego"] = env.get_template("authz_test.rego.j2").render(context)
    files[DATA_PATH] = json.dumps(tables(config), indent=2, sort_keys=True) + "\n"
    return {path: text.encode("utf-8") for path, text in files.items()}
